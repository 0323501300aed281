"""ppl_gen: deep generative latent-variable models on Pyro and PyTorch.

Declare a model, fit it with amortised or mean-field guides, and get honest ELBO and
IWAE-K numbers.  The public API is re-exported here; see the README.
"""

import os as _os

# Let MKL use AVX-512 kernels on CPUs that have them (on some AMD CPUs MKL otherwise
# stays on AVX2, about 1.8x slower for the matrix products that dominate IWAE-K).  Must be
# set before torch loads MKL; has no effect on CPUs without AVX-512 or if the user set it.
_os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX512")

__version__ = "0.1.0"

# Public API, imported lazily so that ``import ppl_gen`` stays cheap (no torch) and
# cycle-free: name -> the module that defines it.
_EXPORTS = {
    # errors, devices, checkpoints, durable writes
    "PplGenError": "ppl_gen.core.errors",
    "resolve_device": "ppl_gen.core.device",
    "to_device": "ppl_gen.core.device",
    "save_checkpoint": "ppl_gen.core.checkpoint",
    "load_checkpoint": "ppl_gen.core.checkpoint",
    "safe_load": "ppl_gen.core.checkpoint",
    "output_lock": "ppl_gen.core.io",
    # data parallelism
    "DistributedContext": "ppl_gen.core.distributed",
    "RankFailed": "ppl_gen.core.distributed",
    "init_from_env": "ppl_gen.core.distributed",
    # data
    "load_dataset": "ppl_gen.data.datasets",
    "DataSplits": "ppl_gen.data.datasets",
    # declaring models
    "LatentVariableModel": "ppl_gen.lvm.declare",
    "mlp": "ppl_gen.lvm.nets",
    "data_plate": "ppl_gen.lvm.plates",
    # inference and bounds
    "evaluate_bounds": "ppl_gen.infer.bounds",
    "BoundEstimate": "ppl_gen.infer.bounds",
    "train": "ppl_gen.infer.training",
    "TrainConfig": "ppl_gen.infer.training",
    "fit_local_guide": "ppl_gen.infer.training",
    "evaluate_on": "ppl_gen.infer.evaluation",
    "evaluate_ais": "ppl_gen.infer.ais",
    "AISEstimate": "ppl_gen.infer.ais",
    "bdmc": "ppl_gen.infer.bdmc",
    "BDMCResult": "ppl_gen.infer.bdmc",
    "reference_log_likelihood": "ppl_gen.infer.bdmc",
    # the training engine
    "fit": "ppl_gen.engine.loop",
    "Task": "ppl_gen.engine.loop",
    "LoopConfig": "ppl_gen.engine.loop",
    "FitResult": "ppl_gen.engine.loop",
    "EpochSummary": "ppl_gen.engine.loop",
    "TrainingDiverged": "ppl_gen.engine.divergence",
    "seed_everything": "ppl_gen.engine.rng",
    "settings_record": "ppl_gen.engine.state",
    "data_fingerprint": "ppl_gen.engine.state",
    # jobs: what the CLI commands run
    "run_compare": "ppl_gen.jobs.compare",
    "CompareConfig": "ppl_gen.jobs.compare",
    "run_train_vae": "ppl_gen.jobs.train_vae",
    "TrainVAEConfig": "ppl_gen.jobs.train_vae",
    "run_train_gan": "ppl_gen.jobs.train_gan",
    "run_train_cyclegan": "ppl_gen.jobs.train_gan",
    "run_novelty": "ppl_gen.jobs.novelty",
    "NoveltyConfig": "ppl_gen.jobs.novelty",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'ppl_gen' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (:data:`__all__`) and the module's own attributes, without importing
    anything."""
    return sorted(set(globals()) | set(__all__))
