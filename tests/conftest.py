"""Shared test fixtures."""

import pyro
import pytest


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Every test starts from seed 0 and an empty Pyro parameter store."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
