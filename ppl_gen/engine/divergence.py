"""The divergence stop: a non-finite loss, or a finite one that exploded.

A run whose loss becomes NaN/inf is broken; so is one whose loss is still finite but
astronomically large (``--lr 1e6`` on a VAE reaches a training ELBO of -8e29 without ever
producing a NaN).  :class:`DivergenceGuard` records each loss's first value (computed before
any update, so it is the scale of a sane run) and stops when a later value's magnitude
exceeds ``factor`` times ``max(1, |first value|)``.  The default factor 1e4 leaves room for
the ordinary swings of every family (a GAN's generator loss rises several-fold, an ELBO
falls by a factor of a few) while catching an explosion within a few steps.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Default explosion factor of :class:`DivergenceGuard` (see the module docs).
EXPLODE_FACTOR = 1e4


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or exploded; the message names the loss, epoch and batch
    and whether a good checkpoint is left (the CLI exits with status 1)."""


class DivergenceGuard:
    """Stop a run whose loss is non-finite or exploded (module docs).

    Args:
        factor: a value with ``|v| > factor * max(1, |first v|)`` is an explosion;
            ``math.inf`` disables the explosion test (non-finite values still stop).
        checkpoint: the run's checkpoint, named in the message when it exists.
    """

    def __init__(
        self, factor: float = EXPLODE_FACTOR, checkpoint: str | os.PathLike | None = None
    ) -> None:
        if not factor > 1:
            raise ValueError(f"explode_factor must be > 1, got {factor!r}")
        self.factor = float(factor)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.reference: dict[str, float] = {}

    def state_dict(self) -> dict[str, float]:
        """The first values seen (stored in checkpoints so a resumed run checks the same)."""
        return dict(self.reference)

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore :meth:`state_dict`."""
        self.reference = {k: float(v) for k, v in state.items()}

    def _kept(self) -> str:
        if self.checkpoint is not None and self.checkpoint.exists():
            return f"; the last good checkpoint is kept at {self.checkpoint}"
        return "; no checkpoint was written"

    def check(self, values: dict[str, float], epoch: int, batch: int) -> None:
        """Raise :class:`TrainingDiverged` if any of ``values`` diverged.

        Args:
            values: this step's losses (plain floats).
            epoch, batch: 1-based position, for the message.
        """
        for key, value in values.items():
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"non-finite {key} ({value}) at epoch {epoch}, batch {batch}{self._kept()}"
                )
            ref = self.reference.setdefault(key, value)
            if abs(value) > self.factor * max(1.0, abs(ref)):
                raise TrainingDiverged(
                    f"{key} exploded to {value:.4g} at epoch {epoch}, batch {batch} (more "
                    f"than {self.factor:g} x its first value {ref:.4g}; lower the learning "
                    f"rate){self._kept()}"
                )
