"""Packaging: every subpackage of the engine ships (pyproject lists packages explicitly
because ``models/`` and ``guides/`` are mapped into ``ppl_gen``), and the dependency locks fit
``requires-python`` and every supported platform (no network: ``scripts/check_lock.py`` resolves
them against PyPI)."""

from __future__ import annotations

import fnmatch
import importlib.util
import platform as platform_module
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent


def test_every_engine_subpackage_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "ppl_gen." + ".".join(p.parent.relative_to(ROOT / "ppl_gen").parts)
        for p in (ROOT / "ppl_gen").rglob("__init__.py")
        if p.parent != ROOT / "ppl_gen"
    }
    assert found <= listed, f"missing from pyproject [tool.setuptools] packages: {found - listed}"
    assert {"ppl_gen", "ppl_gen.models", "ppl_gen.guides"} <= listed


# --- the dependency locks (scripts/check_lock.py resolves them per target with the network;
# these checks need none) -------------------------------------------------------------------


def _check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_lock", module)
    spec.loader.exec_module(module)
    return sys.modules["check_lock"]


check_lock = _check_lock()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TARGETS = [(p, py) for p in check_lock.PLATFORMS for py in check_lock.PYTHONS]


def _here():
    machine = platform_module.machine()
    for p in check_lock.PLATFORMS:
        if p.markers["sys_platform"] == sys.platform and p.markers["platform_machine"] == machine:
            return p
    pytest.skip(f"no lock target for {sys.platform} {machine}")


def _ids(target) -> str:
    return f"{target[0].label}-py{target[1]}"


def test_requires_python_is_the_range_the_locks_are_checked_for():
    requires = SpecifierSet(PYPROJECT["requires-python"])
    assert all(requires.contains(f"{py}.0") for py in check_lock.PYTHONS)
    below = Version(check_lock.PYTHONS[0])
    assert not requires.contains(f"{below.major}.{below.minor - 1}.0"), "requires-python too wide"
    listed = {
        c.rsplit(" :: ", 1)[1]
        for c in PYPROJECT["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert listed == set(check_lock.PYTHONS)


def test_the_three_locks_agree():
    assert check_lock.offline_problems() == []


@pytest.mark.parametrize("target", TARGETS, ids=_ids)
def test_lock_pins_every_dependency_once_on_every_target(target):
    platform, python = target
    pins = check_lock.pins_for(check_lock.LOCK, platform, python)  # raises on a double pin
    env = check_lock.marker_environment(platform, python)
    for text in PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["test"]:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} not pinned for {_ids(target)}"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {req.specifier}"
    cuda = sorted(n for n in pins if check_lock.CUDA_ONLY.match(n))
    if platform.markers["sys_platform"] != "linux":
        assert cuda == [], f"Linux-only CUDA wheels pinned for {_ids(target)}: {cuda}"


def test_installed_pins_admit_every_python_they_are_selected_for():
    """A pin needing Python >= 3.11 (numpy 2.4, annotated-doc 0.0.7) carries a marker."""
    here = _here()
    here_py = f"{sys.version_info.major}.{sys.version_info.minor}"
    by_python = {py: check_lock.pins_for(check_lock.LOCK, here, py) for py in check_lock.PYTHONS}
    wrong = []
    for name, version in check_lock.pins_for(check_lock.LOCK, here, here_py).items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if Version(dist.version).public != version:
            continue  # not installed from the lock; nothing to learn from its metadata
        requires = SpecifierSet(dist.metadata.get("Requires-Python") or "")
        for python in check_lock.PYTHONS:
            if by_python[python].get(name) == version and not requires.contains(f"{python}.0"):
                wrong.append(f"{name}=={version} (Requires-Python {requires}) on {python}")
    assert not wrong, f"pins selected for a Python they do not support: {wrong}"


def test_environment_matches_the_lock():
    here = _here()
    pins = check_lock.pins_for(
        check_lock.LOCK, here, f"{sys.version_info.major}.{sys.version_info.minor}"
    )
    off = {}
    for name, version in pins.items():
        try:
            installed = Version(metadata.version(name)).public  # 2.15.0+cpu counts as 2.15.0
        except metadata.PackageNotFoundError:
            installed = None  # a CPU-only install has no CUDA runtime
        if installed != version and not (installed is None and check_lock.CUDA_ONLY.match(name)):
            off[name] = (version, installed)
    assert not off, f"environment differs from requirements.lock (pinned, installed): {off}"


def test_package_data_ships_the_json_files_of_jobs():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["ppl_gen.jobs"]
    shipped = [p for p in (ROOT / "ppl_gen" / "jobs").glob("*.json")]
    assert shipped, "ppl_gen/jobs has no JSON file"
    assert all(any(fnmatch.fnmatch(p.name, pat) for pat in patterns) for p in shipped)
