"""The one training engine: a loop every family plugs a step into (:mod:`.loop`), the
divergence stop (:mod:`.divergence`), weights-only random states (:mod:`.rng`) and the
resume rule and Pyro parameter store (:mod:`.state`)."""

from ppl_gen.engine.divergence import EXPLODE_FACTOR, DivergenceGuard, TrainingDiverged
from ppl_gen.engine.loop import EpochSummary, FitResult, LoopConfig, Task, fit
from ppl_gen.engine.rng import seed_everything
from ppl_gen.engine.state import data_fingerprint, settings_record

__all__ = [
    "EXPLODE_FACTOR",
    "DivergenceGuard",
    "EpochSummary",
    "FitResult",
    "LoopConfig",
    "Task",
    "TrainingDiverged",
    "data_fingerprint",
    "fit",
    "seed_everything",
    "settings_record",
]
