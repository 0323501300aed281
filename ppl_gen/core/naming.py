"""Unique Pyro parameter-store scopes for model and guide instances.

Pyro's ``pyro.module(name, module)`` registers a module's parameters in the *global*
parameter store under ``name``; two live instances registered under the same name would
silently share an entry.  ppl_gen gives every model and guide instance its own scope so
that several fits (one per inference scheme) can live side by side in one process.
"""

from __future__ import annotations

import itertools

_counter = itertools.count()


def unique_scope(prefix: str) -> str:
    """Return ``"{prefix}_{n}"`` with ``n`` unique within this process."""
    return f"{prefix}_{next(_counter)}"
