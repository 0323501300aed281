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

# Public API, imported lazily so that ``import ppl_gen`` stays cheap and cycle-free.
_EXPORTS = {
    "resolve_device": "ppl_gen.core.device",
    "to_device": "ppl_gen.core.device",
    "PplGenError": "ppl_gen.core.errors",
    "load_dataset": "ppl_gen.data.datasets",
    "DataSplits": "ppl_gen.data.datasets",
    "LatentVariableModel": "ppl_gen.lvm.declare",
    "mlp": "ppl_gen.lvm.nets",
    "data_plate": "ppl_gen.lvm.plates",
    "evaluate_bounds": "ppl_gen.infer.bounds",
    "BoundEstimate": "ppl_gen.infer.bounds",
    "train": "ppl_gen.infer.training",
    "TrainConfig": "ppl_gen.infer.training",
    "TrainingDiverged": "ppl_gen.infer.training",
    "fit_local_guide": "ppl_gen.infer.training",
    "evaluate_on": "ppl_gen.infer.evaluation",
    "run_compare": "ppl_gen.jobs.compare",
    "CompareConfig": "ppl_gen.jobs.compare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ppl_gen' has no attribute {name!r}")
