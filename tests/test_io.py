"""Durable writes and the ``--out`` lock (:mod:`ppl_gen.core.io`), also across processes:
a writer killed with SIGKILL mid-write, a second live run on the same folder, a stale lock."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ppl_gen.core import io
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import (
    LOCK_NAME,
    TEMP_MARKER,
    atomic_path,
    output_lock,
    remove_stale_temps,
    save_with,
    torch_save,
    write_json,
    write_text,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


def python(code: str, *args: str) -> subprocess.Popen:
    """Start ``python -c code args...`` with the repository on the path."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if TEMP_MARKER in p.name]


# ----------------------------------------------------------------------------- writes


def test_atomic_write_syncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync, real_open = os.fsync, os.open
    names: dict[int, str] = {}

    def opening(path, flags, *args):
        fd = real_open(path, flags, *args)
        names[fd] = os.fspath(path)
        return fd

    def fsync(fd):
        synced.append(names.get(fd, "?"))
        return real_fsync(fd)

    monkeypatch.setattr(io.os, "open", opening)
    monkeypatch.setattr(io.os, "fsync", fsync)
    dest = tmp_path / "sub" / "metrics.json"
    write_json(dest, {"a": 1})
    assert json.loads(dest.read_text()) == {"a": 1}
    assert len(synced) == 2
    assert TEMP_MARKER in Path(synced[0]).name and synced[0].endswith(".json")
    assert synced[1] == str(dest.parent)
    assert temps(dest.parent) == []


def test_every_writer_replaces_atomically(tmp_path):
    write_text(tmp_path / "a.txt", "one")
    write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    torch_save(tmp_path / "t.pt", {"x": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))
    suffixes: list[str] = []
    save_with(tmp_path / "f.png", lambda p: (suffixes.append(p.suffix), p.write_bytes(b"png")))
    assert suffixes == [".png"] and (tmp_path / "f.png").read_bytes() == b"png"
    assert temps(tmp_path) == []


def test_files_get_the_umask_mode(tmp_path):
    mask = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_a_failed_write_leaves_the_destination_and_no_temp(tmp_path):
    dest = tmp_path / "a.txt"
    dest.write_text("good")
    with pytest.raises(KeyError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise KeyError("boom")
    assert dest.read_text() == "good" and temps(tmp_path) == []


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    dest = tmp_path / "a.txt"
    with pytest.raises(PplGenError, match=r"^no space left on device writing '.*a\.txt'$"):
        with atomic_path(dest):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not dest.exists() and temps(tmp_path) == []


def test_an_unwritable_place_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PplGenError, match="^cannot write"):
        write_text(tmp_path / "file" / "a.txt", "x")


def test_sigkill_mid_write_keeps_the_destination_and_the_next_lock_cleans_up(tmp_path):
    dest = tmp_path / "out" / "checkpoint.pt"
    torch_save(dest, {"epoch": 1})
    proc = python(
        """
        import os, signal, sys
        from ppl_gen.core.io import atomic_path
        with atomic_path(sys.argv[1]) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial checkpoint" * 1000)
                fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        str(dest),
    )
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = temps(dest.parent)
    assert len(left) == 1 and left[0].name.startswith(".checkpoint") and left[0].suffix == ".pt"
    assert torch.load(dest, weights_only=True) == {"epoch": 1}  # intact
    with output_lock(dest.parent):
        assert temps(dest.parent) == []
    assert torch.load(dest, weights_only=True) == {"epoch": 1}


def test_remove_stale_temps_goes_two_subfolders_deep(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    keep = [tmp_path / "x.png", tmp_path / f"visible{TEMP_MARKER}1.png"]
    stale = [
        tmp_path / f".x{TEMP_MARKER}1.png",
        tmp_path / "a" / f".y{TEMP_MARKER}2.pt",
        tmp_path / "a" / "b" / f".y{TEMP_MARKER}2.pt",
    ]
    too_deep = deep / f".z{TEMP_MARKER}3.pt"
    for p in [*keep, *stale, too_deep]:
        p.write_text("x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in [*keep, too_deep])


# ----------------------------------------------------------------------------- lock

HOLD = """
import sys, time
from ppl_gen.core.io import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(folder: Path, seconds: float = 120) -> subprocess.Popen:
    """A live process holding ``folder``'s lock (returns once it holds it)."""
    proc = python(HOLD, str(folder), str(seconds))
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        pytest.fail(f"lock holder did not start: {proc.communicate()[1][-2000:]}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate(timeout=60)


def test_a_second_live_process_is_refused_naming_the_folder(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:
        owner = json.loads((folder / LOCK_NAME).read_text())
        assert owner["pid"] == holder.pid
        with pytest.raises(PplGenError) as exc, output_lock(folder):
            pass
        message = str(exc.value)
        assert "\n" not in message
        assert message.startswith(f"out {str(folder)!r} is in use by another ppl_gen run")
        assert f"pid {holder.pid}" in message
        # the refused attempt left the holder's lock alone
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid
    finally:
        stop(holder)


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays
    holder.communicate(timeout=60)
    assert (folder / LOCK_NAME).exists()
    stale = folder / f".metrics{TEMP_MARKER}ab.json"
    stale.write_text("{")
    with output_lock(folder):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert not stale.exists()
    assert not (folder / LOCK_NAME).exists()


RACE = """
import os, sys, time
from pathlib import Path
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import output_lock
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
try:
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(4)
except PplGenError as exc:
    print("refused", exc, flush=True)
"""


def test_runs_starting_together_on_a_stale_lock_get_one_owner(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (folder / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": None}))
    go = tmp_path / "go"
    procs = [python(RACE, str(folder), str(go)) for _ in range(4)]
    time.sleep(3)  # let them all start and wait
    go.write_text("")
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["held", "refused", "refused", "refused"], outs
    assert all("in use by another ppl_gen run" in o for o in outs if o.startswith("refused"))
    assert not (folder / LOCK_NAME).exists() and temps(folder) == []


def test_an_unreadable_lock_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("not json")
    with output_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_lock_from_another_host_is_honoured(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid"}))
    with pytest.raises(PplGenError, match="in use by another ppl_gen run .*elsewhere.invalid"):
        with output_lock(tmp_path, flag="--out"):
            pass


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    with output_lock(tmp_path):
        with output_lock(tmp_path / "."):  # same folder, another spelling
            assert (tmp_path / LOCK_NAME).exists()
        assert (tmp_path / LOCK_NAME).exists()  # the outer run still holds it
    assert not (tmp_path / LOCK_NAME).exists()
    with output_lock(tmp_path):  # and it can be taken again
        pass


def test_the_lock_is_released_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError), output_lock(tmp_path):
        raise RuntimeError("x")
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PplGenError, match="exists and is not a folder"):
        with output_lock(tmp_path / "f"):
            pass


def test_cli_refuses_a_second_run_on_the_same_out(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ppl_gen",
                "train",
                "vae",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--n-train",
                "64",
                "--hidden",
                "8",
                "--latent-dim",
                "2",
                "--device",
                "cpu",
                "--out",
                str(folder),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=300,
            env=ENV,
            cwd=tmp_path,
        )
        elapsed = time.monotonic() - t0
    finally:
        stop(holder)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(folder) in lines[0] and "in use by another ppl_gen run" in lines[0]
    assert not (folder / "checkpoint.pt").exists() and not (folder / "metrics.json").exists()
    assert elapsed < 300
