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
