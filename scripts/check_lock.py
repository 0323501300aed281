"""Check that the dependency locks resolve on every supported platform and Python.

The locks are pip requirements files with environment markers, written by uv's universal
resolver (``uv pip compile --universal``) from ``pyproject.toml``:

- ``requirements.lock``: what ``pip install -r requirements.lock -e '.[test]'`` installs
  (README, CI);
- ``requirements-hashed.lock``: the same pins with sha256 hashes, for
  ``pip install --require-hashes -r requirements-hashed.lock`` followed by
  ``pip install --no-deps -e '.[test]'`` (pip refuses an editable install in hash-checking mode,
  so the CI line cannot use hashes);
- ``requirements-cpu.lock``: the same pins less the CUDA runtime (``nvidia-*``, ``cuda-*``,
  ``triton``), for a CPU-only install with PyTorch's CPU wheels (README, "CPU-only install").

Usage (from the repository root; needs ``packaging`` and, for the resolution, ``uv`` from PyPI and
the network)::

    python scripts/check_lock.py             # resolve the lock for every target, one line each
    python scripts/check_lock.py --offline   # only the checks that need no network
    python scripts/check_lock.py --write     # regenerate the three locks from pyproject.toml

For each target (platform x Python) the lock's pins whose markers hold there are resolved again by
``uv pip compile --python-platform P --python-version V --only-binary :all:`` together with
``pyproject.toml[test]``: the target passes when uv finds wheels for every pin and needs exactly
the pins the lock selects there (nothing missing, nothing different). Exit status 1 when any check
fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
HASHED_LOCK = ROOT / "requirements-hashed.lock"
CPU_LOCK = ROOT / "requirements-cpu.lock"

#: Pythons the locks are resolved and checked for; ``requires-python`` starts at the first.
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
#: Packages that only a CUDA build of PyTorch needs (left out of ``requirements-cpu.lock``).
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
COMPILE_COMMAND = "python scripts/check_lock.py --write"


@dataclass(frozen=True)
class Platform:
    """One operating system / CPU pair: its marker values and uv's name for it."""

    label: str
    uv_platform: str
    markers: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)


_POSIX = {"os_name": "posix", "implementation_name": "cpython"}
PLATFORMS = (
    Platform(
        "linux-x86_64",
        "x86_64-manylinux_2_28",
        {
            **_POSIX,
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
        },
    ),
    Platform(
        "linux-aarch64",
        "aarch64-manylinux_2_28",
        {
            **_POSIX,
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "aarch64",
        },
    ),
    Platform(
        "macos-arm64",
        "aarch64-apple-darwin",
        {
            **_POSIX,
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "platform_machine": "arm64",
        },
        # PyTorch's macOS wheels are tagged macosx_14_0_arm64; uv assumes macOS 13 unless told.
        {"MACOSX_DEPLOYMENT_TARGET": "14.0"},
    ),
    Platform(
        "windows-amd64",
        "x86_64-pc-windows-msvc",
        {
            "os_name": "nt",
            "implementation_name": "cpython",
            "sys_platform": "win32",
            "platform_system": "Windows",
            "platform_machine": "AMD64",
        },
    ),
)


def marker_environment(platform: Platform, python: str) -> dict[str, str]:
    """Marker values (PEP 508) of CPython ``python`` (e.g. ``"3.10"``) on ``platform``."""
    return {
        "platform_python_implementation": "CPython",
        "python_version": python,
        "python_full_version": f"{python}.0",
        "platform_release": "",
        "platform_version": "",
        **platform.markers,
    }


def read_lock(path: Path) -> list[tuple[Requirement, list[str]]]:
    """Requirements of a lock file with their ``--hash`` values (continuation lines joined).

    Raises ``ValueError`` on a line that is not ``name==version [; marker]``.
    """
    logical, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line and not current:
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    if current.strip():
        logical.append(current.strip())
    out = []
    for text in logical:
        hashes = re.findall(r"--hash=(\S+)", text)
        req = Requirement(re.sub(r"\s*--hash=\S+", "", text).strip())
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"{path.name}: {text!r} is not an exact pin")
        out.append((req, hashes))
    return out


def pins_for(path: Path, platform: Platform, python: str) -> dict[str, str]:
    """``{canonical name: version}`` of the pins of ``path`` whose markers hold on the target.

    Raises ``ValueError`` when two pins of one package both apply there.
    """
    env = marker_environment(platform, python)
    pins: dict[str, str] = {}
    for req, _ in read_lock(path):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        version = next(iter(req.specifier)).version
        if name in pins:
            raise ValueError(f"{path.name}: {name} pinned twice for {platform.label} py{python}")
        pins[name] = version
    return pins


def offline_problems() -> list[str]:
    """Disagreements between the three lock files (no network needed)."""
    problems = []
    lock = {
        (canonicalize_name(r.name), str(r.specifier), str(r.marker)) for r, _ in read_lock(LOCK)
    }
    hashed = read_lock(HASHED_LOCK)
    unhashed = sorted(r.name for r, h in hashed if not h)
    if unhashed:
        problems.append(f"{HASHED_LOCK.name}: pins without --hash: {unhashed}")
    hashed_pins = {(canonicalize_name(r.name), str(r.specifier), str(r.marker)) for r, _ in hashed}
    if hashed_pins != lock:
        problems.append(
            f"{HASHED_LOCK.name} differs from {LOCK.name}: {sorted(hashed_pins ^ lock)[:6]}"
        )
    cpu = {
        (canonicalize_name(r.name), str(r.specifier), str(r.marker)) for r, _ in read_lock(CPU_LOCK)
    }
    expected_cpu = {p for p in lock if not CUDA_ONLY.match(p[0])}
    if cpu != expected_cpu:
        problems.append(f"{CPU_LOCK.name} is not {LOCK.name} less the CUDA runtime")
    return problems


def find_uv() -> str:
    """Path of the uv executable (``$UV``, the ``uv`` Python package, or ``uv`` on PATH)."""
    if os.environ.get("UV"):
        return os.environ["UV"]
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if not found:
        sys.exit("check_lock: uv not found; install it with `pip install uv` (PyPI) or set $UV")
    return found


def resolve(uv: str, platform: Platform, python: str) -> str:
    """One line: does the lock resolve, with wheels only, for ``platform`` and ``python``?"""
    wanted = pins_for(LOCK, platform, python)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resolved.txt"
        cmd = [
            uv, "pip", "compile", str(LOCK), str(ROOT / "pyproject.toml"), "--extra", "test",
            "--python-platform", platform.uv_platform, "--python-version", python,
            "--only-binary", ":all:", "--no-header", "--no-annotate", "--quiet", "-o", str(out),
        ]  # fmt: skip
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **platform.env}
        )
        target = f"{platform.label:<14} py{python:<5}"
        if done.returncode != 0:
            why = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
            reason = next((ln for ln in why if "because" in ln.lower()), why[-1] if why else "?")
            return f"FAIL {target} {reason.removeprefix('cause: ')}"
        got = {}
        for line in out.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                req = Requirement(line.split(";")[0].strip())
                got[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    got.pop("ppl-gen", None)
    extra = sorted(f"{n}=={v}" for n, v in got.items() if wanted.get(n) != v)
    if extra:
        return f"FAIL {target} lock lacks or pins differently: {extra}"
    torch = wanted.get("torch", "-")
    cuda = "CUDA" if any(CUDA_ONLY.match(n) for n in wanted) else "CPU"
    return f"ok   {target} {len(wanted):>3} pins, wheels for all (torch {torch}, {cuda} build)"


def write_locks(uv: str) -> None:
    """Regenerate the locks from pyproject.toml, keeping current pins where they still fit."""
    base = [uv, "pip", "compile", "pyproject.toml", "--extra", "test", "--universal", "--quiet"]
    base += ["--python-version", PYTHONS[0], "--custom-compile-command", COMPILE_COMMAND]
    subprocess.run([*base, "-o", str(LOCK)], cwd=ROOT, check=True)
    # The hashed lock prefers the pins of requirements.lock (uv reads its -o file as preferences).
    shutil.copyfile(LOCK, HASHED_LOCK)
    subprocess.run([*base, "--generate-hashes", "-o", str(HASHED_LOCK)], cwd=ROOT, check=True)
    lines, skip = [], False
    head = (
        "# CPU-only variant of requirements.lock (written by scripts/check_lock.py --write):\n"
        "# the same pins less the CUDA runtime (nvidia-*, cuda-*, triton). Install PyTorch's CPU\n"
        "# wheels first, then this file (README, 'CPU-only install').\n"
    )
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            skip = bool(CUDA_ONLY.match(canonicalize_name(re.split(r"[=; ]", line)[0])))
        if not skip:
            lines.append(line)
    CPU_LOCK.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--offline", action="store_true", help="only the lock-file agreement checks"
    )
    parser.add_argument("--write", action="store_true", help="regenerate the locks with uv first")
    parser.add_argument("--python", action="append", help="only these Pythons (e.g. 3.12)")
    args = parser.parse_args(argv)
    if args.write:
        write_locks(find_uv())
    problems = offline_problems()
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print(f"ok   {LOCK.name}, {HASHED_LOCK.name} and {CPU_LOCK.name} agree")
    if args.offline:
        return int(bool(problems))
    uv = find_uv()
    version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"resolving with {version} against PyPI, wheels only")
    failed = bool(problems)
    for python in args.python or PYTHONS:
        for platform in PLATFORMS:
            line = resolve(uv, platform, python)
            print(line, flush=True)
            failed |= line.startswith("FAIL")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
