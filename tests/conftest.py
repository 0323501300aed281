"""Shared test fixtures."""

import pyro
import pytest
import torch

# The tests use small models, for which one thread is fastest; with two OpenMP threads a
# tiny matrix product can stall for milliseconds when the other core is busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Every test starts from seed 0 and an empty Pyro parameter store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
