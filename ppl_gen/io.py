"""Atomic file writes: a crash never leaves a half-written output or checkpoint.

Every file ppl_gen writes goes to a temporary file in the destination folder first and is
then moved over the destination with :func:`os.replace`, which is atomic on POSIX and
Windows.  The previous version stays intact until the new one is complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ppl_gen.errors import PplGenError


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Return ``path`` if it can be (or become) an output folder, checked before any work.

    Raises:
        PplGenError: naming ``flag`` if ``path`` or one of its ancestors exists and is not
            a folder (writing there would fail only after training).
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise PplGenError(f"{flag} {str(path)!r}: {str(p)!r} exists and is not a folder")
            break
    return path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success move it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.  The
    temporary name is hidden (leading dot) and keeps the destination's suffix, so
    format-sniffing writers (matplotlib, torchvision) pick the right format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
