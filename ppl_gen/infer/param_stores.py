"""One Pyro parameter store per fit, so fixed ``pyro.param`` names never leak between fits.

Pyro keeps parameters in one global store keyed by name.  A hand-written model that calls
``pyro.module("decoder", net)`` or ``pyro.param("noise", ...)`` -- the ordinary Pyro style --
uses the same names in every instance, so a second fit in the same process would find the
first fit's tensors under those names: ``pyro.module`` then hands the optimiser the *old*
tensors while the new network computes with its own (its weights never train), and a
``pyro.param`` starts from the old value.  Pyro's own remedy is
``ParamStoreDict.scope`` (a separate store per model), which this module applies:

* :func:`isolated_store` runs a block in a fresh, empty store and, on success, *exports*
  what the block created into the surrounding store (replacing entries of the same name),
  so that code after ``ppl_gen.train(...)`` -- ``evaluate_bounds``, sampling -- finds the
  fitted values exactly as it would without isolation.
* :class:`FitStore` keeps one fit's store for later use (``compare`` evaluates, draws and
  refines each scheme's fit inside its own store).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pyro


def _export(state: dict) -> None:
    """Copy ``state``'s entries into the active store, replacing same-named entries."""
    store = pyro.get_param_store()
    for name in state["params"]:
        if name in store:
            del store[name]
    store.set_state(state)


@contextlib.contextmanager
def isolated_store(export: bool = True) -> Iterator[dict]:
    """Run the block in a fresh, empty Pyro parameter store.

    Args:
        export: on normal exit, copy the block's parameters (fitted values, constraints)
            into the surrounding store, replacing entries of the same name.  On an
            exception nothing is exported and the surrounding store is unchanged.

    Yields:
        The block's store state ``{"params": ..., "constraints": ...}`` (filled on exit).
    """
    with pyro.get_param_store().scope() as state:
        yield state
    if export:
        _export(state)


class FitStore:
    """The parameter store of one fit, re-entered whenever that fit is used again.

    ``with fit_store: ...`` makes this fit's parameters the active store for the block
    (the surrounding store is restored afterwards); parameters the block creates are kept.
    """

    def __init__(self) -> None:
        self.state: dict = {"params": {}, "constraints": {}}

    def __enter__(self) -> FitStore:
        self._scope = pyro.get_param_store().scope(self.state)
        self._scope.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        scope, self._scope = self._scope, None
        scope.__exit__(*exc)

    def names(self) -> list[str]:
        """Names of the parameters held."""
        return sorted(self.state["params"])
