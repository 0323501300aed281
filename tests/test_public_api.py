"""The package's public API: lazy exports, ``dir(ppl_gen)``, and a cheap ``import ppl_gen``."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ppl_gen


def test_dir_lists_the_public_api_and_module_attributes():
    names = dir(ppl_gen)
    assert names == sorted(names)
    assert set(ppl_gen.__all__) <= set(names)
    for name in ("__version__", "__all__", "__getattr__", "__dir__"):
        assert name in names
    for name in ("fit", "LoopConfig", "Task", "TrainingDiverged", "seed_everything"):
        assert name in names  # the engine
    for name in ("run_train_vae", "run_train_gan", "run_compare", "run_novelty"):
        assert name in names  # the jobs


@pytest.mark.parametrize("name", ppl_gen.__all__)
def test_every_export_resolves_to_its_module(name):
    import importlib

    value = getattr(ppl_gen, name)
    home = importlib.import_module(ppl_gen._EXPORTS[name])
    assert value is getattr(home, name)


def test_engine_exports_are_the_engine_s():
    import ppl_gen.engine as engine
    from ppl_gen.infer import training

    assert ppl_gen.fit is engine.fit and ppl_gen.Task is engine.Task
    assert ppl_gen.TrainingDiverged is engine.TrainingDiverged is training.TrainingDiverged


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ppl_gen.nope  # noqa: B018
    assert not hasattr(ppl_gen, "nope")


def test_import_and_dir_do_not_load_torch():
    code = (
        "import sys, ppl_gen; names = dir(ppl_gen); "
        "assert 'fit' in names; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
