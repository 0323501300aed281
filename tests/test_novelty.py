"""Novelty detection: AUROC, holding a class out, scores, and the end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

import ppl_gen
from ppl_gen.autoencoders import MLPAutoencoder
from ppl_gen.core.errors import PplGenError
from ppl_gen.jobs.novelty import (
    NoveltyConfig,
    auroc,
    holdout_class,
    reconstruction_scores,
    run_novelty,
)
from ppl_gen.latent import load_pair

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_auroc_extremes_and_chance():
    novel = torch.tensor([False, False, True, True])
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), novel) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), novel) == 0.0
    assert auroc(torch.tensor([0.5, 0.5, 0.5, 0.5]), novel) == 0.5
    # one swapped pair out of 4 pairs
    assert auroc(torch.tensor([0.1, 0.85, 0.8, 0.9]), novel) == 0.75
    with pytest.raises(PplGenError, match="both"):
        auroc(torch.rand(3), torch.tensor([True, True, True]))
    with pytest.raises(PplGenError, match="NaN"):
        auroc(torch.tensor([0.1, float("nan")]), torch.tensor([True, False]))


def test_holdout_class_removes_it_from_training_only():
    splits = ppl_gen.load_dataset("digits", seed=0)
    held = holdout_class(splits, 9)
    assert not bool((held.train_labels == 9).any()) and not bool((held.val_labels == 9).any())
    assert held.train.shape[0] == int((splits.train_labels != 9).sum())
    assert torch.equal(held.test, splits.test)
    with pytest.raises(PplGenError, match="^holdout_class"):
        holdout_class(splits, 12)


def test_reconstruction_scores_of_an_autoencoder():
    model = MLPAutoencoder(6, 2, (4,))
    x = torch.rand(5, 6)
    with torch.no_grad():
        expected = (model.reconstruct(x) - x).pow(2).sum(-1)
    torch.testing.assert_close(reconstruction_scores(model, x, batch_size=2), expected)


@pytest.mark.parametrize("model", ["cae", "vae"])
def test_run_novelty_end_to_end(tmp_path, model):
    config = NoveltyConfig(
        model=model,
        holdout_class=0,
        epochs=2,
        latent_dim=4,
        hidden=(32,),
        iwae_k=5,
        device="cpu",
        out=str(tmp_path),
        progress=False,
    )
    metrics = run_novelty(config)
    scores = {"reconstruction", "iwae"} if model == "vae" else {"reconstruction"}
    assert set(metrics["auroc"]) == scores
    assert all(0.0 <= v <= 1.0 for v in metrics["auroc"].values())
    assert metrics["n_novel"] == int((ppl_gen.load_dataset("digits").test_labels == 0).sum())
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["auroc"] == metrics["auroc"]
    assert (tmp_path / "checkpoint.pt").is_file()
    pair = load_pair(str(tmp_path / "checkpoint.pt"), "cpu")  # usable by the latent tools
    assert pair.latent_dim == 4 and pair.encode is not None


def test_novelty_config_errors():
    with pytest.raises(PplGenError, match="^model"):
        run_novelty(NoveltyConfig(model="gan", out=None))
    with pytest.raises(PplGenError, match="^latent_dim"):
        run_novelty(NoveltyConfig(latent_dim=0, out=None))
