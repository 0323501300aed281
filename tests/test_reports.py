"""Tests for ppl_gen.viz.report: figures, image grids, the latent manifold and the report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from ppl_gen.core.errors import PplGenError
from ppl_gen.viz import report as reports

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert len(data) > 100
    assert data[:8] == PNG_MAGIC


def assert_only(folder: Path, *names: str) -> None:
    """``folder`` holds exactly ``names`` (no leftover temporary files)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


@pytest.fixture
def curves():
    return {
        "elbo": {
            "train_elbo": [-200.0, -150.0, -130.0],
            "val_elbo": [-205.0, -155.0, -140.0],
            "seconds": [1.0, 2.1, 3.3],
        },
        "iwae": {"train_elbo": [-190.0, float("nan"), -120.0], "val_elbo": []},
    }


@pytest.fixture
def metrics():
    return {
        "dataset": "mnist",
        "model": "vae",
        "n_train": 60000,
        "n_test": 10000,
        "latent_dim": 2,
        "device": "cpu",
        "seed": 0,
        "schemes": {
            "trace_elbo": {
                "test_elbo": -25.314,
                "test_elbo_se": 0.123,
                "test_iwae": -24.8,
                "test_iwae_se": 0.11,
                "iwae_k": 50,
                "train_seconds": 12.34,
                "epochs": 5,
                "final_train_elbo": -25.0,
            },
            "renyi": {
                "test_elbo": -26.0,
                "test_elbo_se": 0.2,
                "test_iwae": None,
                "iwae_k": 50,
                "train_seconds": 20.0,
                "epochs": 5,
            },
        },
    }


# ----------------------------------------------------------------------------- loss curves


@pytest.mark.parametrize("with_seconds", [True, False])
def test_plot_loss_curves_writes_png(tmp_path, curves, with_seconds):
    if not with_seconds:
        curves["elbo"].pop("seconds")
    out = reports.plot_loss_curves(curves, tmp_path / "loss.png")
    assert out == tmp_path / "loss.png"
    assert_png(out)
    assert_only(tmp_path, "loss.png")


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"a": {"train_elbo": []}},
        {"a": {"val_elbo": [1.0]}},
        {"a": {"train_elbo": [1.0, 2.0], "val_elbo": [1.0]}},
        {"a": {"train_elbo": [1.0, 2.0], "seconds": [1.0, 2.0, 3.0]}},
    ],
)
def test_plot_loss_curves_rejects_bad_curves(tmp_path, bad):
    with pytest.raises(PplGenError):
        reports.plot_loss_curves(bad, tmp_path / "loss.png")
    assert_only(tmp_path)


# ----------------------------------------------------------------------------- image_grid


def expected_grid_shape(n, h, w, nrow, pad=2):
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    return (3, rows * (h + pad) + pad, cols * (w + pad) + pad)


@pytest.mark.parametrize(
    "image_shape, n, nrow, hw, default_nrow",
    [
        ((8, 8), 10, None, (8, 8), 4),
        ((28, 28), 16, 8, (28, 28), 4),
        ((3, 32, 32), 5, None, (32, 32), 3),
        ((1, 28, 28), 4, 2, (28, 28), 2),
        ((17,), 6, None, (1, 17), 1),
    ],
)
@pytest.mark.parametrize("flat", [True, False])
def test_image_grid_shapes(image_shape, n, nrow, hw, default_nrow, flat):
    d = math.prod(image_shape)
    images = torch.rand(n, d) if flat else torch.rand(n, *image_shape)
    grid = reports.image_grid(images, image_shape, nrow)
    assert grid.shape == expected_grid_shape(n, *hw, nrow or default_nrow)
    assert grid.dtype == torch.float32
    assert grid.device.type == "cpu"
    # padding is white
    assert torch.all(grid[:, :2, :] == 1.0)
    assert torch.all(grid[:, :, :2] == 1.0)


def test_image_grid_grey_and_rgb_content():
    grey = torch.rand(1, 8, 8)
    g = reports.image_grid(grey, (8, 8))
    assert g.shape == (3, 12, 12)  # a single image is padded too
    for c in range(3):
        assert torch.equal(g[c, 2:10, 2:10], grey[0])
    rgb = torch.rand(1, 3, 4, 5)
    g = reports.image_grid(rgb, (3, 4, 5))
    assert torch.equal(g[:, 2:6, 2:7], rgb[0])


def test_image_grid_vectors_are_strips_in_order():
    v = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.25, 0.0]])
    g = reports.image_grid(v, (3,))
    assert g.shape == expected_grid_shape(2, 1, 3, 1)
    assert torch.equal(g[0, 2, 2:5], v[0])
    assert torch.equal(g[0, 5, 2:5], v[1])


def test_image_grid_clamps_values():
    images = torch.tensor([[-1.0, 2.0, float("nan"), 0.5]])
    g = reports.image_grid(images, (2, 2))
    assert g.min() >= 0.0 and g.max() <= 1.0
    assert torch.equal(g[0, 2:4, 2:4], torch.tensor([[0.0, 1.0], [0.0, 0.5]]))


@pytest.mark.parametrize(
    "images, image_shape, nrow",
    [
        (torch.rand(4, 10), (3, 3), None),  # D mismatch
        (torch.rand(0, 9), (3, 3), None),  # empty batch
        (torch.rand(9), (3, 3), None),  # no batch dim
        (torch.rand(2, 8), (2, 2, 2), None),  # two channels unsupported
        (torch.rand(2, 4), (1, 1, 2, 2), None),  # too many dims
        (torch.rand(2, 4), (2, 2), 0),  # bad nrow
    ],
)
def test_image_grid_rejects_bad_input(images, image_shape, nrow):
    with pytest.raises(PplGenError):
        reports.image_grid(images, image_shape, nrow)


# ----------------------------------------------------------------------------- image figures


@pytest.mark.parametrize("image_shape", [(8, 8), (3, 6, 6), (20,)])
def test_save_image_panels_writes_png(tmp_path, image_shape):
    d = math.prod(image_shape)
    panels = {"trace_elbo": torch.rand(9, d), "iwae": torch.rand(6, d)}
    out = reports.save_image_panels(panels, image_shape, tmp_path / "samples.png", title="x")
    assert_png(out)
    assert_only(tmp_path, "samples.png")


def test_save_image_panels_rejects_empty(tmp_path):
    with pytest.raises(PplGenError):
        reports.save_image_panels({}, (8, 8), tmp_path / "s.png")


@pytest.mark.parametrize("image_shape", [(8, 8), (20,)])
def test_save_reconstructions_writes_png(tmp_path, image_shape):
    d = math.prod(image_shape)
    originals = torch.rand(6, d)
    recons = {"a": torch.rand(6, d), "b": torch.rand(6, d)}
    out = reports.save_reconstructions(originals, recons, image_shape, tmp_path / "rec.png")
    assert_png(out)
    assert_only(tmp_path, "rec.png")


def test_save_reconstructions_rejects_count_mismatch(tmp_path):
    with pytest.raises(PplGenError, match="reconstructions"):
        reports.save_reconstructions(
            torch.rand(6, 64), {"a": torch.rand(5, 64)}, (8, 8), tmp_path / "r.png"
        )
    assert_only(tmp_path)


def test_save_manifold_writes_png(tmp_path):
    n = 4
    images = reports.latent_manifold_grid(lambda z: torch.sigmoid(z @ torch.ones(2, 64)), n)
    out = reports.save_manifold(images, (8, 8), n, tmp_path / "manifold.png", title="m")
    assert_png(out)
    assert_only(tmp_path, "manifold.png")


def test_save_manifold_rejects_wrong_count(tmp_path):
    with pytest.raises(PplGenError, match="n\\*n"):
        reports.save_manifold(torch.rand(10, 64), (8, 8), 3, tmp_path / "m.png")


# ----------------------------------------------------------------------------- latent manifold


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [2, 5])
def test_latent_manifold_grid_order_and_quantiles(n, device):
    seen = {}

    def decode(z):
        seen["device"] = z.device
        seen["grad"] = torch.is_grad_enabled()
        return z

    out = reports.latent_manifold_grid(decode, n, device=device)
    assert seen["device"].type == torch.device(device).type
    assert seen["grad"] is False
    assert out.shape == (n * n, 2)
    assert out.device.type == "cpu"

    normal = torch.distributions.Normal(0.0, 1.0)
    q = normal.icdf(torch.linspace(0.05, 0.95, n))
    lo, hi = normal.icdf(torch.tensor(0.05)), normal.icdf(torch.tensor(0.95))
    assert lo.item() == pytest.approx(-1.6448536, abs=1e-5)
    grid = out.reshape(n, n, 2)
    # top-left: z1 smallest, z2 largest; bottom-right: z1 largest, z2 smallest
    assert grid[0, 0].tolist() == pytest.approx([lo.item(), hi.item()], abs=1e-5)
    assert grid[0, -1].tolist() == pytest.approx([hi.item(), hi.item()], abs=1e-5)
    assert grid[-1, 0].tolist() == pytest.approx([lo.item(), lo.item()], abs=1e-5)
    assert grid[-1, -1].tolist() == pytest.approx([hi.item(), lo.item()], abs=1e-5)
    for r in range(n):
        for c in range(n):
            assert grid[r, c, 0].item() == pytest.approx(q[c].item(), abs=1e-5)
            assert grid[r, c, 1].item() == pytest.approx(q[n - 1 - r].item(), abs=1e-5)


def test_latent_manifold_grid_custom_range_and_flattening():
    out = reports.latent_manifold_grid(lambda z: z.reshape(-1, 1, 2), 3, lo=0.5, hi=0.9)
    assert out.shape == (9, 2)
    assert out[3].tolist() == pytest.approx([0.0, 0.5244005], abs=1e-5)  # row 1, col 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 1},
        {"n": 0},
        {"n": True},
        {"n": 2.5},
        {"lo": 0.0},
        {"hi": 1.0},
        {"lo": 0.6, "hi": 0.4},
        {"device": "gpu"},
    ],
)
def test_latent_manifold_grid_rejects_bad_args(kwargs):
    with pytest.raises(PplGenError):
        reports.latent_manifold_grid(lambda z: z, **kwargs)


def test_latent_manifold_grid_rejects_wrong_decode_rows():
    with pytest.raises(PplGenError, match="decode"):
        reports.latent_manifold_grid(lambda z: z[:3], 3)


# ----------------------------------------------------------------------------- metrics table


def table_rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_format_metrics_table(metrics):
    row = metrics["schemes"]["trace_elbo"]
    row.update(
        objective="ELBO",
        test_log_likelihood=-24.5,
        gap_exact_minus_iwae=0.3,
        approximation_gap=0.25,
        amortisation_gap=0.56,
        psis_khat_mean=0.41,
        psis_khat_frac_above_0_7=0.25,
        iterations=5,
    )
    metrics["schemes"]["renyi"]["psis_khat_frac_above_0_7"] = 0.0
    table = reports.format_metrics_table(metrics)
    lines = table.splitlines()
    assert lines[0] == (
        "| scheme | train objective (nats) | test ELBO (nats) | test IWAE-K (nats) "
        "| log p(x) (nats; exact or AIS) | log p(x) − IWAE | IWAE − ELBO | approximation gap "
        "| amortisation gap | PSIS k̂ mean | k̂ > 0.7 | train time (s) | iterations |"
    )
    assert len(lines) == 2 + 2
    rows = table_rows(table)
    assert rows["trace_elbo"] == [
        "-25.00 (ELBO)",
        "-25.31 ± 0.12",
        "-24.80 ± 0.11",
        "-24.50",
        "0.300",
        "0.51",
        "0.250",
        "0.560",
        "0.41",
        "25% (bound unreliable)",
        "12.3",
        "5",
    ]
    assert rows["renyi"] == ["n/a", "-26.00 ± 0.20"] + ["n/a"] * 7 + ["0%", "20.0", "n/a"]


def test_format_metrics_table_missing_values(metrics):
    metrics["schemes"]["bare"] = {"test_elbo": -30.0}
    rows = table_rows(reports.format_metrics_table(metrics))
    assert rows["bare"] == ["n/a", "-30.00"] + ["n/a"] * 10


def test_format_metrics_table_escapes_pipes(metrics):
    metrics["schemes"] = {"a|b": {"test_elbo": -1.0}}
    table = reports.format_metrics_table(metrics)
    assert "a\\|b" in table


@pytest.mark.parametrize("bad", [{}, {"schemes": None}, {"schemes": [1, 2]}])
def test_format_metrics_table_requires_schemes(bad):
    with pytest.raises(PplGenError):
        reports.format_metrics_table(bad)


# ----------------------------------------------------------------------------- report


def test_write_report(tmp_path, metrics):
    figures = {"Loss curves": "loss.png", "Samples per scheme": "samples.png"}
    notes = ["IWAE K = 50 importance samples.", "Ran on CPU."]
    out = reports.write_report(tmp_path / "report.md", metrics, figures, notes)
    assert out == tmp_path / "report.md"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# ppl_gen comparison: vae on mnist\n")
    assert reports.format_metrics_table(metrics) in text
    assert "![Loss curves](loss.png)" in text
    assert "![Samples per scheme](samples.png)" in text
    assert text.index("loss.png") < text.index("samples.png")
    assert "- IWAE K = 50 importance samples.\n" in text
    assert "- Ran on CPU.\n" in text
    for fact in ("60000", "10000", "latent dimension 2", "cpu", "seed 0", "K = 50"):
        assert fact in text
    assert "nats per test datapoint" in text and "higher is better" in text
    assert "Burda et al. 2016" in text
    assert_only(tmp_path, "report.md")


def test_write_report_figure_paths(tmp_path, metrics):
    figures = {"abs": str(tmp_path / "figs" / "a.png"), "spaced": "my fig.png"}
    text = reports.write_report(tmp_path / "report.md", metrics, figures).read_text()
    assert "![abs](figs/a.png)" in text
    assert "![spaced](<my fig.png>)" in text
    assert "## Notes" not in text
    with pytest.raises(PplGenError, match="relative"):
        reports.write_report(tmp_path / "r2.md", metrics, {"x": "/elsewhere/x.png"})


# ----------------------------------------------------------------------------- atomicity


def test_failing_figure_writer_leaves_existing_file(tmp_path, curves, monkeypatch):
    target = tmp_path / "loss.png"
    target.write_bytes(b"previous")

    def broken_savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        reports.plot_loss_curves(curves, target)
    with pytest.raises(OSError, match="disk full"):
        reports.save_image_panels({"a": torch.rand(4, 64)}, (8, 8), target)
    assert target.read_bytes() == b"previous"
    assert_only(tmp_path, "loss.png")


def test_failing_report_write_leaves_existing_file(tmp_path, metrics, monkeypatch):
    target = tmp_path / "report.md"
    target.write_text("previous report")
    original = Path.write_text

    def broken_write_text(self, text, *args, **kwargs):
        original(self, text[:10], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", broken_write_text)
    with pytest.raises(OSError, match="disk full"):
        reports.write_report(target, metrics, {"Loss": "loss.png"})
    monkeypatch.undo()
    assert target.read_text() == "previous report"
    assert_only(tmp_path, "report.md")


def test_figures_overwrite_existing_file(tmp_path, curves):
    target = tmp_path / "loss.png"
    target.write_bytes(b"previous")
    reports.plot_loss_curves(curves, target)
    assert_png(target)
    assert_only(tmp_path, "loss.png")
