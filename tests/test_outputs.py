"""Outputs users' tools read (issue 15, item 4): ``history.jsonl`` from every trainer on the
engine, ``metrics.json`` against its JSON Schema, the NUTS ``InferenceData`` as netCDF with
``az.summary``, ``--tensorboard`` without the package, and the autoencoder manifold laid on
its codes."""

from __future__ import annotations

import json
import logging
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl_gen
from ppl_gen.core.errors import PplGenError

SCHEMA = Path(ppl_gen.__file__).parent / "jobs" / "metrics.schema.json"


def _history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- history.jsonl


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    """A plain autoencoder with a 2-D code, 3 epochs on digits (its checkpoint records the
    dataset, as ``ppl-gen train ae`` writes it)."""
    from ppl_gen.jobs.train_autoencoder import AutoencoderJob, run_train_autoencoder

    out = tmp_path_factory.mktemp("ae")
    job = AutoencoderJob(
        variant="ae",
        latent_dim=2,
        hidden=(32,),
        epochs=3,
        batch_size=256,
        n_train=600,
        device="cpu",
        out=str(out),
        progress=False,
    )
    run_train_autoencoder(job)
    return out


def test_svi_and_autoencoder_trainers_write_history_jsonl(tmp_path, autoencoder_run):
    from ppl_gen.guides import AmortisedGaussianGuide
    from ppl_gen.models import VAE

    data = ppl_gen.load_dataset("digits", binarize="dynamic", seed=0, n_train=128)
    model = VAE(data.data_dim, 2, (16,))
    guide = AmortisedGaussianGuide(model, hidden=(16,))
    config = ppl_gen.TrainConfig(
        epochs=3, batch_size=64, progress=False, checkpoint=str(tmp_path / "checkpoint.pt")
    )
    result = ppl_gen.train(model, guide, data, config)

    svi = _history(tmp_path / "history.jsonl")
    ae = _history(autoencoder_run / "history.jsonl")
    for rows, epochs in ((svi, 3), (ae, 3)):
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
        seconds = [r["seconds"] for r in rows]
        assert all(s > 0 for s in seconds) and seconds == sorted(seconds)
        assert rows[0]["units"]["seconds"].startswith("s")
    assert [r["train_elbo"] for r in svi] == pytest.approx(result.history["train_elbo"])
    assert svi[0]["units"]["train_elbo"] == "nats per datapoint"
    ae_keys = set(ae[0]) - {"epoch", "seconds", "units"}
    assert ae_keys and all(isinstance(ae[-1][k], int | float) for k in ae_keys)


def test_tensorboard_without_the_package_is_one_clear_error(tmp_path):
    from ppl_gen.engine.history import enable_tensorboard, tensorboard_enabled

    if find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(PplGenError, match="^tensorboard: the tensorboard package is not"):
        enable_tensorboard(True)
    assert not tensorboard_enabled()


# --------------------------------------------------------------------------- metrics.json


def _validate(instance, schema: dict, root: dict | None = None, where: str = "$") -> None:
    """The JSON Schema subset metrics.schema.json uses (jsonschema is not in the lock):
    $ref, type, const, enum, required, properties, additionalProperties, items, minimum,
    maximum, minProperties.  Raises AssertionError naming the failing location."""
    root = root or schema
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _validate(instance, node, root, where)
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
        "integer": int,
        "number": (int, float),
    }
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        numeric = ("integer", "number")
        ok = any(
            isinstance(instance, types[t]) and not (t in numeric and isinstance(instance, bool))
            for t in allowed
        )
        assert ok, f"{where}: {instance!r} is not of type {allowed}"
    if "const" in schema:
        assert instance == schema["const"], f"{where}: {instance!r} != {schema['const']!r}"
    if "enum" in schema:
        assert instance in schema["enum"], f"{where}: {instance!r} not in {schema['enum']}"
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema:
            assert instance >= schema["minimum"], f"{where}: {instance} < minimum"
        if "maximum" in schema:
            assert instance <= schema["maximum"], f"{where}: {instance} > maximum"
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            assert key in instance, f"{where}: missing required key {key!r}"
        assert len(instance) >= schema.get("minProperties", 0), f"{where}: too few keys"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                _validate(value, props[key], root, f"{where}.{key}")
            elif isinstance(extra, dict):
                _validate(value, extra, root, f"{where}.{key}")
            else:
                assert extra, f"{where}: unexpected key {key!r}"
    if isinstance(instance, list) and "items" in schema:
        for i, value in enumerate(instance):
            _validate(value, schema["items"], root, f"{where}[{i}]")


def validate(instance, schema: dict) -> None:
    if find_spec("jsonschema") is not None:
        import jsonschema

        jsonschema.validate(instance, schema)
    _validate(instance, schema)


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    from ppl_gen.jobs.compare import CompareConfig, run_compare

    out = tmp_path_factory.mktemp("compare")
    config = CompareConfig(
        model="ppca",
        latent_dim=2,
        schemes=("em", "mean-field", "amortised", "nuts"),
        n_train=200,
        n_test=30,
        epochs=2,
        iwae_k=50,
        em_max_iter=20,
        nuts_subset=2,
        nuts_warmup=10,
        nuts_samples=10,
        out=str(out),
        progress=False,
    )
    return run_compare(config), out


def test_metrics_json_validates_against_its_schema(compare_run):
    metrics, out = compare_run
    schema = json.loads(SCHEMA.read_text())
    written = json.loads((out / "metrics.json").read_text())
    validate(written, schema)
    assert written["schema_version"] == schema["properties"]["schema_version"]["const"]
    em, cavi, svi = (written["schemes"][s]["history"] for s in ("em", "mean-field", "amortised"))
    assert em["step"] == "iteration" and em["objective"] == "log-likelihood"
    assert cavi["step"] == "iteration" and cavi["objective"] == "ELBO"
    assert svi["step"] == "epoch" and len(svi["values"]) == 2
    assert len(em["values"]) == len(em["seconds"]) == written["schemes"]["em"]["iterations"]
    # the validator rejects what the schema forbids (it can fail)
    broken = json.loads(json.dumps(written))
    broken["schemes"]["em"]["history"]["step"] = "batch"
    with pytest.raises(Exception, match="batch"):
        validate(broken, schema)
    del broken["schema_version"]
    with pytest.raises(Exception, match="schema_version"):
        validate(broken, schema)


def test_nuts_writes_inference_data_and_summary(compare_run):
    import arviz as az

    metrics, out = compare_run
    idata = az.from_netcdf(out / "nuts_posterior.nc")
    assert idata.posterior["z"].shape == (2, 10, 2, 2)  # chains, draws, test points, Q
    summary = (out / "nuts_summary.csv").read_text().splitlines()
    assert "r_hat" in summary[0] and "ess_bulk" in summary[0]
    assert len(summary) == 1 + 2 * 2  # one row per test point and latent coordinate
    report = (out / "report.md").read_text()
    assert "| nuts (n = 2 of 30)" in report


# --------------------------------------------------------------------------- latent manifold


def test_autoencoder_manifold_is_laid_on_its_codes(autoencoder_run, tmp_path):
    from ppl_gen.jobs.latent import run_manifold, training_codes
    from ppl_gen.latent.pairs import load_pair

    pair = load_pair(str(autoencoder_run / "checkpoint.pt"), "cpu")
    assert pair.prior is None
    codes = training_codes(pair)
    summary = run_manifold(pair, tmp_path, n=5)
    assert summary["grid_on"] == "codes"
    with np.load(tmp_path / "manifold.npz") as npz:
        z = torch.as_tensor(npz["z"])
    mean, std = codes.mean(0), codes.std(0, unbiased=False)
    centre = z[12]  # the middle cell of a 5 x 5 grid: the 50% quantile in both directions
    torch.testing.assert_close(centre, mean, atol=1e-4, rtol=1e-4)
    spread = z.max(0).values - z.min(0).values  # 5%..95% quantiles: 2 * 1.645 sd
    torch.testing.assert_close(spread, 2 * 1.6449 * std, atol=1e-3, rtol=1e-3)
    assert summary["grid_fraction_outside_codes"] < 0.25


def test_a_grid_far_outside_the_codes_is_warned_about(caplog):
    from ppl_gen.latent.manifold import manifold
    from ppl_gen.latent.pairs import EncoderDecoder

    decoder = torch.nn.Linear(2, 64)
    pair = EncoderDecoder(None, decoder, 2, (8, 8))  # a prior N(0, 1) model
    far = torch.randn(200, 2, generator=torch.Generator().manual_seed(0)) * 0.1 + 6.0
    with caplog.at_level(logging.WARNING, logger="ppl_gen.latent.manifold"):
        images, z = manifold(pair, 4, codes=far)
    assert "outside the 99.9% ellipse of the codes" in caplog.text
    assert float(z.abs().max()) < 2  # the grid itself stays on the prior
    caplog.clear()
    near = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING, logger="ppl_gen.latent.manifold"):
        manifold(pair, 4, codes=near)
    assert "outside" not in caplog.text
    no_prior = EncoderDecoder(None, decoder, 2, (8, 8), kind="autoencoder", prior=None)
    with pytest.raises(PplGenError, match="^codes"):
        manifold(no_prior, 4)
