"""Models from the user's own file: ``PATH.py:FACTORY`` (``ppl-gen compare --model``).

``FACTORY(data)`` receives the loaded :class:`~ppl_gen.data.datasets.DataSplits` and returns
a fresh Pyro model ``model(x, indices=None, size=None)`` following the data plate
convention (:mod:`ppl_gen.lvm.plates`) -- a plain function, an ``nn.Module`` calling
``pyro.module``, a ``PyroModule`` or a declared
:class:`~ppl_gen.lvm.declare.LatentVariableModel`.  The file is imported as a module of its
own (it runs, as ``python PATH.py`` would: it is the user's code, run at the user's
request); nothing else is ever imported from a path.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from ppl_gen.core.errors import PplGenError

FORM = "PATH.py:FACTORY"


def is_model_file(spec: str) -> bool:
    """Whether ``spec`` names a model in a file (``PATH.py:FACTORY``) rather than a shipped
    model."""
    path, sep, name = str(spec).rpartition(":")
    return bool(sep) and path.endswith(".py") and bool(name)


def load_model_factory(spec: str, argument: str = "model") -> Callable:
    """Import ``PATH.py`` and return its callable ``FACTORY``.

    Args:
        spec: ``PATH.py:FACTORY``.
        argument: the parameter name used in error messages.

    Raises:
        PplGenError: naming ``argument``, if the file does not exist, fails to import, does
            not define ``FACTORY``, or ``FACTORY`` is not callable.
    """
    path_text, _, name = str(spec).rpartition(":")
    path = Path(path_text)
    if not is_model_file(spec):
        raise PplGenError(f"{argument}: expected {FORM}, got {spec!r}")
    if not path.is_file():
        raise PplGenError(f"{argument}: no such file {path_text!r} (expected {FORM})")
    if not name.isidentifier():
        raise PplGenError(f"{argument}: {name!r} is not a Python name (expected {FORM})")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(f"ppl_gen_user_model_{digest}", path)
    if module_spec is None or module_spec.loader is None:
        raise PplGenError(f"{argument}: cannot import {path_text!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error it raises is reported in one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise PplGenError(
            f"{argument}: importing {path_text!r} failed ({type(exc).__name__}: {first[:160]})"
        ) from None
    factory = getattr(module, name, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise PplGenError(
            f"{argument}: {path_text!r} defines no {name!r} (callables there: "
            f"{', '.join(public[:8]) or 'none'})"
        )
    if not callable(factory):
        raise PplGenError(f"{argument}: {name!r} in {path_text!r} is not callable")
    return factory
