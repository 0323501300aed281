"""``ppl-gen compare``: fit one model with several inference schemes and compare the fits.

Each scheme trains the same model architecture from the same seed with a different guide,
then the test set is scored with the ELBO and IWAE-K (same K for every scheme), in nats
per test datapoint.  The run directory receives ``report.md``, ``metrics.json``,
``loss_curves.png``, ``samples.png``, ``reconstructions.png`` and, for a 2-D latent space,
``manifold_<scheme>.png`` (Kingma & Welling 2014, fig. 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import torch

from ppl_gen import reports
from ppl_gen.builders import GUIDES, ModelSpec, build_guide, build_model
from ppl_gen.data import BINARIZE_MODES, DataSplits, load_dataset
from ppl_gen.declare import LatentVariableModel
from ppl_gen.device import describe, resolve_device
from ppl_gen.errors import PplGenError, require_positive_int
from ppl_gen.evaluation import evaluate_on
from ppl_gen.io import check_output_dir, write_json
from ppl_gen.priors import StandardNormalPrior
from ppl_gen.training import TrainConfig, train

SCHEMES = GUIDES


@dataclass
class CompareConfig:
    """Settings of :func:`run_compare` (the defaults are the README's main job: the VAE on
    scikit-learn's digits, a 2-D latent space, both guides, about a minute on 2 CPU cores).

    Attributes:
        model: ``vae`` or ``conv-vae``.
        data: ``digits``, ``mnist`` or a ``.npy``/``.npz`` path; ``data_root`` for MNIST.
        schemes: inference schemes, each a guide: ``amortised``, ``mean-field``.
        epochs, batch_size, lr: training settings shared by all schemes.
        latent_dim, hidden, likelihood: the model (``hidden`` is one width per layer).
        binarize: ``dynamic``, ``static`` or ``none``.
        iwae_k: K of the test IWAE-K bound.
        n_train, n_test: optional truncation of the splits.
        test_refit_steps: Adam steps fitting mean-field local parameters to test data.
        seed, device, out: reproducibility, device request and output folder.
        progress: show progress bars.
    """

    model: str = "vae"
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    schemes: Sequence[str] = ("amortised", "mean-field")
    epochs: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    latent_dim: int = 2
    hidden: Sequence[int] = (256,)
    likelihood: str = "bernoulli"
    binarize: str = "dynamic"
    elbo: str = "analytic-kl"
    iwae_k: int = 1000
    n_train: int | None = None
    n_test: int | None = None
    test_refit_steps: int = 500
    seed: int = 0
    device: str = "auto"
    out: str = "runs/compare"
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Check every field before anything is trained or written.

        Raises:
            PplGenError: naming the first bad option and what is accepted.
        """
        schemes = list(self.schemes)
        if not schemes:
            raise PplGenError(f"--schemes must name at least one of {', '.join(SCHEMES)}")
        for s in schemes:
            if s not in SCHEMES:
                raise PplGenError(f"--schemes must be a subset of {', '.join(SCHEMES)}, got {s!r}")
        if len(set(schemes)) != len(schemes):
            raise PplGenError(f"--schemes lists a scheme twice: {','.join(schemes)}")
        require_positive_int("--epochs", self.epochs)
        require_positive_int("--batch-size", self.batch_size)
        require_positive_int("--iwae-k", self.iwae_k)
        require_positive_int("--test-refit-steps", self.test_refit_steps)
        if self.binarize not in BINARIZE_MODES:
            raise PplGenError(
                f"--binarize must be one of {', '.join(BINARIZE_MODES)}, got {self.binarize!r}"
            )
        ModelSpec(self.model, 784, self.latent_dim, self.hidden, self.likelihood).validate()
        TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, elbo=self.elbo
        ).validate()
        resolve_device(self.device)
        check_output_dir(self.out, "--out")


def _samples_and_reconstructions(model, evaluation, x_test: torch.Tensor, n: int = 10):
    generator_state = torch.get_rng_state()
    torch.manual_seed(0)
    samples = model.decode_mean(model.sample_prior(64, x_test)).cpu()
    torch.set_rng_state(generator_state)
    guide = evaluation.guide
    rows = torch.arange(min(n, x_test.shape[0]), device=x_test.device)
    if getattr(guide, "is_local", False):
        loc = guide.posterior(rows)[model.latent_site][0]
    else:
        loc = guide.encode(x_test[rows])[model.latent_site][0]
    return samples, model.decode_mean(loc.detach()).cpu()


def _factory_name(factory: Callable) -> str:
    return getattr(factory, "__name__", type(factory).__name__)


def run_compare(
    config: CompareConfig | None = None,
    model_factory: Callable[[DataSplits], Callable] | None = None,
) -> dict:
    """Fit the model with every scheme, score the test set, write the report.

    Args:
        config: the settings (defaults: :class:`CompareConfig`).
        model_factory: optional ``factory(data) -> model`` building a fresh instance of *your
            own* model (declared with :class:`~ppl_gen.declare.LatentVariableModel` or a
            hand-written Pyro model following the data plate convention) for each scheme;
            ``config.model``, ``latent_dim`` and ``likelihood`` are then ignored.  Sample,
            reconstruction and manifold figures need a declared model.

    Returns:
        The metrics dictionary written to ``<out>/metrics.json``: ``dataset``, ``model``,
        ``n_train``, ``n_test``, ``latent_dim``, ``device``, ``seed``, ``config`` and
        ``schemes.<name>`` with ``test_elbo``, ``test_elbo_se``, ``test_iwae``,
        ``test_iwae_se``, ``iwae_k`` (bounds in nats per test datapoint, higher is better),
        ``train_seconds``, ``test_inference_seconds``, ``eval_seconds``, ``epochs``,
        ``iterations``, ``final_train_elbo``, ``final_val_elbo``.

    Raises:
        PplGenError: bad configuration or data (nothing is written in that case).
    """
    config = config or CompareConfig()
    config.validate()
    device = resolve_device(config.device)
    data: DataSplits = load_dataset(
        config.data,
        config.data_root,
        download=config.download,
        binarize=config.binarize,
        seed=config.seed,
        n_train=config.n_train,
        n_test=config.n_test,
    ).to(device)
    spec = ModelSpec(
        config.model,
        data.data_dim,
        config.latent_dim,
        tuple(config.hidden),
        config.likelihood,
        data.image_shape,
    )
    if model_factory is None:
        spec.validate()
    out = Path(config.out)
    metrics: dict = {
        "dataset": data.name,
        "model": config.model if model_factory is None else _factory_name(model_factory),
        "n_train": int(data.train.shape[0]),
        "n_test": int(data.test.shape[0]),
        "latent_dim": config.latent_dim,
        "device": describe(device),
        "seed": config.seed,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "schemes": {},
    }
    curves, samples, recons = {}, {}, {}
    manifolds = {}
    for scheme in config.schemes:
        pyro.set_rng_seed(config.seed)
        model = build_model(spec) if model_factory is None else model_factory(data)
        guide = build_guide(scheme, model, data.train.shape[0], spec.hidden)
        result = train(
            model,
            guide,
            data,
            TrainConfig(
                epochs=config.epochs,
                batch_size=config.batch_size,
                lr=config.lr,
                elbo=config.elbo,
                seed=config.seed,
                val_every=max(1, config.epochs // 20),
                progress=config.progress,
                device=str(device),
            ),
        )
        evaluation = evaluate_on(
            model, guide, data.test, config.iwae_k, refit_steps=config.test_refit_steps
        )
        b = evaluation.bounds
        history = result.history
        vals = [v for v in history["val_elbo"] if v is not None]
        metrics["schemes"][scheme] = {
            "test_elbo": b.elbo_mean,
            "test_elbo_se": b.elbo_se,
            "test_iwae": b.iwae_mean,
            "test_iwae_se": b.iwae_se,
            "iwae_k": b.k,
            "train_seconds": result.seconds,
            "test_inference_seconds": evaluation.inference_seconds,
            "eval_seconds": evaluation.bound_seconds,
            "epochs": result.epochs,
            "iterations": result.iterations,
            "final_train_elbo": history["train_elbo"][-1],
            "final_val_elbo": vals[-1] if vals else None,
        }
        curves[scheme] = {
            "train_elbo": history["train_elbo"],
            "val_elbo": [float("nan") if v is None else v for v in history["val_elbo"]],
            "seconds": history["seconds"],
        }
        if isinstance(model, LatentVariableModel):
            samples[scheme], recons[scheme] = _samples_and_reconstructions(
                model, evaluation, data.test
            )
            if model.latent_dim == 2 and isinstance(model.prior, StandardNormalPrior):
                manifolds[scheme] = reports.latent_manifold_grid(
                    model.decode_mean, 20, device=device
                )
    figures = {
        "ELBO per epoch and against wall time": "loss_curves.png",
        "Samples from p(x|z), z ~ p(z) (decoder means)": "samples.png",
        "Test images and reconstructions (decoder mean at posterior mean)": "reconstructions.png",
    }
    reports.plot_loss_curves(curves, out / "loss_curves.png")
    if samples:
        reports.save_image_panels(samples, data.image_shape, out / "samples.png", nrow=8)
        originals = data.test[: next(iter(recons.values())).shape[0]].cpu()
        reports.save_reconstructions(
            originals, recons, data.image_shape, out / "reconstructions.png"
        )
    else:
        figures = {"ELBO per epoch and against wall time": "loss_curves.png"}
    for scheme, grid in manifolds.items():
        name = f"manifold_{scheme}.png"
        reports.save_manifold(grid, data.image_shape, 20, out / name, title=scheme)
        figures[f"2-D latent manifold, {scheme} (Kingma & Welling 2014, fig. 4)"] = name
    notes = [
        "Mean-field: test bounds use local parameters fitted to the test images with the "
        f"model frozen ({config.test_refit_steps} Adam steps); amortised: one encoder pass.",
        "Standard errors are over test datapoints.",
    ]
    write_json(out / "metrics.json", metrics)
    reports.write_report(out / "report.md", metrics, figures, notes)
    return metrics
