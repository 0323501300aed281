"""Atomic, durable file writes, and the ``--out`` lock.

Every file ppl_gen writes goes to a temporary file in the destination folder first
(``.NAME.ppl_gen-tmp-XXXX.SUFFIX``), is flushed to disk (``fsync``), then moved over the
destination with :func:`os.replace` (atomic on POSIX and Windows), and the folder entry is
synced too.  The previous version stays intact until the new one is complete and durable.
A run killed with ``kill -9`` mid-write leaves its temporary file behind; the next run on
the same folder removes it when it takes the folder's lock (:func:`output_lock`).

:func:`output_lock` makes an output folder belong to one live run: a second run on the same
folder is refused with a one-line error while the first is alive; the lock of a dead
process (killed, crashed) is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ppl_gen.core.errors import PplGenError

#: Marker in the names of temporary files (removed by :func:`remove_stale_temps`).
TEMP_MARKER = ".ppl_gen-tmp-"
#: Name of the lock file :func:`output_lock` creates in a folder.
LOCK_NAME = ".ppl_gen.lock"

_HELD: dict[Path, int] = {}


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_output_dir(path: str | os.PathLike, flag: str = "out") -> Path:
    """Return ``path`` if it can be (or become) a writable output folder, checked before
    any work (nothing is left behind).

    Permission bits are not trusted (``os.access`` says yes to root on a read-only mount):
    the nearest existing folder is probed by creating, writing and removing a hidden
    temporary folder with a one-byte file in it (:func:`probe_writable`).

    Raises:
        PplGenError: naming ``flag`` if ``path`` or one of its ancestors exists and is not
            a folder, the folder cannot be created or written (permissions, a read-only or
            pseudo file system), or the disk is full (``no space left on device``).
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise PplGenError(f"{flag} {str(path)!r}: {str(p)!r} exists and is not a folder")
            reason = probe_writable(p)
            if reason:
                raise PplGenError(f"{flag} {str(path)!r}: {str(p)!r} {reason}")
            break
    return path


def probe_writable(folder: str | os.PathLike) -> str | None:
    """Try to create a subfolder and a one-byte file in ``folder``, then remove both.

    Returns:
        ``None`` if that worked, else the reason in words (``"is not writable (Permission
        denied)"``, ``"is on a full disk (no space left on device)"``).
    """
    try:
        tmp = tempfile.mkdtemp(prefix=f".probe{TEMP_MARKER}", dir=folder)
    except OSError as exc:
        return _write_failure(exc)
    try:
        with open(os.path.join(tmp, "probe"), "wb") as fh:
            fh.write(b"\0")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return _write_failure(exc)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, "probe"))
        with contextlib.suppress(OSError):
            os.rmdir(tmp)
    return None


def _write_failure(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "is on a full disk (no space left on device)"
    return f"is not writable ({exc.strerror or exc})"


def _fsync_path(path: Path, directory: bool = False) -> None:
    if directory and os.name == "nt":  # Windows cannot open folders for fsync
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success sync it and move it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.  The
    temporary name is hidden (leading dot) and keeps the destination's suffix, so
    format-sniffing writers (matplotlib, torchvision) pick the right format.

    Raises:
        PplGenError: the disk is full (``no space left on device``) or the folder cannot
            be written, naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}{TEMP_MARKER}", suffix=path.suffix, dir=path.parent
        )
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PplGenError(f"no space left on device writing {str(path)!r}") from None
        raise PplGenError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        _fsync_path(Path(tmp))
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PplGenError(f"no space left on device writing {str(path)!r}") from None
        if isinstance(exc, RuntimeError) and "No space left" in str(exc):
            raise PplGenError(f"no space left on device writing {str(path)!r}") from None
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result over ``path`` atomically.

    ``writer`` must write a complete file at the path it is given (e.g. a matplotlib
    ``savefig`` or torchvision ``save_image`` call).
    """
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def remove_stale_temps(folder: str | os.PathLike, depth: int = 2) -> list[Path]:
    """Remove temporary files left by a killed writer in ``folder`` (and its subfolders up
    to ``depth`` levels); returns what was removed.  Call it only while holding the
    folder's :func:`output_lock` (a live writer's temporary file would go too)."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for root, dirs, files in os.walk(folder):
        level = len(Path(root).relative_to(folder).parts)
        if level >= depth:
            dirs[:] = []
        for name in files:
            if name.startswith(".") and TEMP_MARKER in name:
                p = Path(root) / name
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _create_lock(lock: Path, me: dict) -> bool:
    """Create ``lock`` holding ``me``, atomically *with* its content (so no other process
    ever reads a half-written lock): the content goes to a temporary file first, which is
    then hard-linked to the lock's name (fails if the name exists).  Returns whether the
    lock was created; ``False``: it exists.  Filesystems without hard links fall back to
    ``O_EXCL`` creation."""
    fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_NAME}{TEMP_MARKER}", dir=lock.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        try:
            os.link(tmp, lock)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:  # the holder's clean-up took our temporary file
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        try:  # no hard links here
            fd2 = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd2, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _remove_stale(lock: Path, seen: dict) -> None:
    """Remove ``lock`` if it still holds the stale owner ``seen``: it is first renamed to a
    private name (atomic), then checked; a lock that another process created meanwhile is
    put back (``os.link`` again, if the name is still free)."""
    aside = lock.with_name(f"{LOCK_NAME}{TEMP_MARKER}stale-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # someone else removed it
    if _read_lock(aside) != seen:  # a fresh lock: not ours to remove
        with contextlib.suppress(OSError):
            os.link(aside, lock)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(aside)


@contextmanager
def output_lock(folder: str | os.PathLike, flag: str = "out") -> Iterator[Path]:
    """Hold ``folder`` for this run: create ``folder/.ppl_gen.lock`` (pid and host), remove
    stale temporary files of killed runs, and delete the lock on exit.  Re-entrant within
    one process (nested jobs share the lock).

    A lock whose process is dead is taken over (also when several runs start at once: one
    of them gets the folder); a lock from another host is honoured (its process cannot be
    checked).  An unreadable lock (not written by ppl_gen) is taken over too.

    Raises:
        PplGenError: naming ``flag`` when another live process holds the folder.
    """
    folder = Path(folder)
    key = folder.resolve()
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    check_output_dir(folder, flag)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(20):
        try:
            if _create_lock(lock, me):
                break
        except OSError as exc:
            raise PplGenError(
                f"{flag} {str(folder)!r}: cannot create a lock file ({exc.strerror or exc})"
            ) from None
        owner = _read_lock(lock)
        pid, host = int(owner.get("pid", -1) or -1), owner.get("host")
        if host not in (None, me["host"]) or (_alive(pid) and pid != me["pid"]):
            raise PplGenError(
                f"{flag} {str(folder)!r} is in use by another ppl_gen run (pid {pid} on "
                f"{host}); wait for it to finish or choose another folder"
            )
        _remove_stale(lock, owner)  # its process is gone
    else:
        raise PplGenError(f"{flag} {str(folder)!r}: could not take the folder's lock")
    _HELD[key] = 1
    try:
        remove_stale_temps(folder)
        yield folder
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            if _read_lock(lock) == me:
                lock.unlink()
