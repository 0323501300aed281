"""Per-epoch training logs that users' tools read: ``history.jsonl`` and TensorBoard scalars.

:func:`ppl_gen.engine.loop.fit` calls :meth:`HistoryWriter.write_epoch` on rank 0 after
every epoch, so every trainer on the engine (SVI, GAN, CycleGAN, DANN, autoencoders, the
judge classifier) writes ``history.jsonl`` beside its checkpoint: one JSON object per line,
one line per epoch, e.g.::

    {"epoch": 3, "train_elbo": -31.2, "val_elbo": -31.9, "seconds": 1.84,
     "units": {"train_elbo": "nats per datapoint", "val_elbo": "nats per datapoint",
               "seconds": "s, cumulative training wall time"}}

The keys are the trainer's own per-epoch history entries (its ``end_epoch`` return or its
step means); ``seconds`` is the cumulative training wall time; ``units`` names the unit of
every key it knows (:func:`units_for`).  Non-finite values are written as ``null`` (JSON has
no NaN).  The whole file is rewritten atomically after each epoch from the run's history,
so a resumed run continues the same file and a crash never leaves a half-written line
(``jq -c . history.jsonl``, ``pandas.read_json(path, lines=True)``).

With TensorBoard enabled (``--tensorboard`` on the command line, :func:`enable_tensorboard`
in Python) the same scalars go to ``<checkpoint folder>/tensorboard`` through
``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard`` package must be installed;
it is not in ``requirements.lock``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import write_text

FILENAME = "history.jsonl"
TENSORBOARD_DIR = "tensorboard"

_TENSORBOARD = {"enabled": False}


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed by ``torch.utils.tensorboard``) is installed."""
    return find_spec("tensorboard") is not None


def enable_tensorboard(enabled: bool = True, flag: str = "tensorboard") -> None:
    """Make every later :func:`~ppl_gen.engine.loop.fit` in this process also write
    TensorBoard scalars (the CLI's ``--tensorboard`` calls this before any work).

    Raises:
        PplGenError: naming ``flag`` when ``tensorboard`` is not installed.
    """
    if enabled and not tensorboard_available():
        raise PplGenError(
            f"{flag}: the tensorboard package is not installed (pip install tensorboard); "
            "history.jsonl is written without it"
        )
    _TENSORBOARD["enabled"] = bool(enabled)


def tensorboard_enabled() -> bool:
    """The process-wide default set by :func:`enable_tensorboard`."""
    return _TENSORBOARD["enabled"]


def units_for(key: str) -> str | None:
    """The unit of a per-epoch history key, or ``None`` when the name does not say.

    ELBO / log-likelihood keys are nats per datapoint; ``*_loss`` keys the family's mean
    loss per batch; ``*accuracy*`` / ``*_error`` fractions; ``seconds`` cumulative wall time.
    """
    k = key.lower()
    if k == "epoch":
        return None
    if k == "seconds":
        return "s, cumulative training wall time"
    if k.endswith("seconds"):
        return "s"
    if "elbo" in k or "log_likelihood" in k or "iwae" in k:
        return "nats per datapoint"
    if "accuracy" in k or k.endswith("_error") or k.endswith("_rate"):
        return "fraction"
    if k == "lr" or k.endswith("_lr"):
        return "learning rate"
    if "reconstruction" in k:
        return "per datapoint (reconstruction loss: cross-entropy nats or squared error)"
    if k == "loss" or k.endswith("_loss") or k.endswith("loss_mean"):
        return "mean loss per batch"
    return None


def _json_value(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


def history_rows(history: Mapping[str, list]) -> list[dict[str, Any]]:
    """One dict per epoch from the engine's column-wise history ``{key: [per epoch]}``
    (``epoch`` first, ``seconds`` and ``units`` last)."""
    n = len(history.get("epoch", []))
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for key, values in history.items():
            if i < len(values) and (values[i] is not None or key in ("epoch", "seconds")):
                row[key] = _json_value(values[i])
        seconds = row.pop("seconds", None)
        row = {"epoch": row.pop("epoch", i + 1), **row, "seconds": seconds}
        units = {k: u for k in row if (u := units_for(k)) is not None}
        row["units"] = units
        rows.append(row)
    return rows


class HistoryWriter:
    """Writes ``history.jsonl`` (and optionally TensorBoard scalars) for one run.

    Args:
        folder: the run's folder (beside the checkpoint).
        tensorboard: also write ``folder/tensorboard`` event files (``None``: the process
            default of :func:`enable_tensorboard`).

    Raises:
        PplGenError: ``tensorboard`` requested without the package installed.
    """

    def __init__(self, folder: str | os.PathLike, tensorboard: bool | None = None) -> None:
        self.path = Path(folder) / FILENAME
        self.tensorboard = tensorboard_enabled() if tensorboard is None else bool(tensorboard)
        self._writer = None
        if self.tensorboard and not tensorboard_available():
            enable_tensorboard(True)  # raises, naming the flag

    def write_epoch(self, history: Mapping[str, list]) -> Path:
        """Rewrite ``history.jsonl`` from the whole history and log the last epoch's scalars.

        Returns:
            The path of ``history.jsonl``.
        """
        rows = history_rows(history)
        text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
        write_text(self.path, text)
        if self.tensorboard and rows:
            self._log_scalars(rows[-1])
        return self.path

    def _log_scalars(self, row: Mapping[str, Any]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path.parent / TENSORBOARD_DIR))
        step = int(row["epoch"])
        for key, value in row.items():
            if key in ("epoch", "units") or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer (if one was opened)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = [
    "FILENAME",
    "HistoryWriter",
    "enable_tensorboard",
    "history_rows",
    "tensorboard_available",
    "tensorboard_enabled",
    "units_for",
]
