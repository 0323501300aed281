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
    "resolve_device": "ppl_gen.device",
    "to_device": "ppl_gen.device",
    "PplGenError": "ppl_gen.errors",
    "load_dataset": "ppl_gen.data",
    "DataSplits": "ppl_gen.data",
    "LatentVariableModel": "ppl_gen.declare",
    "mlp": "ppl_gen.nets",
    "data_plate": "ppl_gen.plates",
    "evaluate_bounds": "ppl_gen.bounds",
    "BoundEstimate": "ppl_gen.bounds",
    "train": "ppl_gen.training",
    "TrainConfig": "ppl_gen.training",
    "TrainingDiverged": "ppl_gen.training",
    "fit_local_guide": "ppl_gen.training",
    "evaluate_on": "ppl_gen.evaluation",
    "run_compare": "ppl_gen.compare",
    "CompareConfig": "ppl_gen.compare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ppl_gen' has no attribute {name!r}")
