"""CLI commands of the autoencoder family: ``train ae|dae|sae|cae|cvae``, the ``latent``
tools, ``novelty``, and the ``evaluate`` handlers of autoencoder and CVAE checkpoints.

Each command parses its options and calls a job: :mod:`ppl_gen.jobs.train_autoencoder`
(training, figures, ``metrics.json``), :mod:`ppl_gen.jobs.latent` and
:func:`ppl_gen.jobs.novelty.run_novelty`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import typer

from ppl_gen.autoencoders.build import load_autoencoder
from ppl_gen.autoencoders.conditional import cvae_bounds, load_cvae
from ppl_gen.autoencoders.evaluation import reconstruction_errors, squared_errors
from ppl_gen.cli.common import (
    DATA,
    DATA_ROOT,
    DEVICE,
    DOWNLOAD,
    SEED,
    TENSORBOARD,
    Activation,
    AEArch,
    AEOutput,
    Binarize,
    ElboName,
    EvaluateOptions,
    Likelihood,
    Method,
    Noise,
    app,
    emit,
    evaluator,
    parse_hidden,
    train_app,
)
from ppl_gen.core.device import module_device
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import check_output_dir
from ppl_gen.data.datasets import load_dataset
from ppl_gen.engine.history import enable_tensorboard
from ppl_gen.jobs.latent import (
    load_images,
    run_attribute,
    run_grid,
    run_interpolate,
    run_manifold,
    run_reconstruct,
    run_tsne,
)
from ppl_gen.jobs.novelty import MODELS as NOVELTY_MODELS
from ppl_gen.jobs.novelty import NoveltyConfig, run_novelty
from ppl_gen.jobs.train_autoencoder import (
    AutoencoderJob,
    CVAEJob,
    run_train_autoencoder,
    run_train_cvae,
)
from ppl_gen.latent.interpolate import METHODS
from ppl_gen.latent.pairs import EncoderDecoder, load_pair

latent_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Latent-space tools for a VAE, CVAE, autoencoder or generator checkpoint.",
)
app.add_typer(latent_app, name="latent")

JSON_OPT = typer.Option(False, "--json", help="print the result as JSON")
NoveltyModel = Literal[NOVELTY_MODELS]


# --------------------------------------------------------------------------- train ae/dae/...


def _train_autoencoder(variant: str, **o) -> None:
    job = AutoencoderJob(
        variant=variant,
        data=o["data"],
        data_root=o["data_root"],
        download=o["download"],
        binarize=o["binarize"],
        n_train=o["n_train"],
        arch=o["arch"],
        latent_dim=o["latent_dim"],
        hidden=parse_hidden(o["hidden"]),
        activation=o["activation"],
        output=o["output"],
        noise=o["noise"],
        noise_level=o["noise_level"],
        sparsity=o["sparsity"],
        contractive=o["contractive"],
        epochs=o["epochs"],
        batch_size=o["batch_size"],
        lr=o["lr"],
        seed=o["seed"],
        device=o["device"],
        out=o["out"],
        resume=o["resume"],
        progress=not o["as_json"],
    )
    summary = run_train_autoencoder(job)
    emit(
        summary,
        o["as_json"],
        f"trained {summary['epochs']} epochs; test reconstruction "
        f"{summary['test_reconstruction']:.3f} {summary['units']}; "
        f"checkpoint: {Path(summary['checkpoint']).resolve()}",
    )


def _register_autoencoder_command(variant: str, help_text: str) -> None:
    def command(
        data: str = DATA,
        data_root: str = DATA_ROOT,
        download: bool = DOWNLOAD,
        arch: AEArch = typer.Option(
            "mlp", help="mlp or conv (grey images with sides divisible by 4)"
        ),
        latent_dim: int = typer.Option(32, help="code size Z"),
        hidden: str = typer.Option("256", help="mlp hidden widths, comma-separated"),
        activation: Activation = typer.Option(
            "relu", help="mlp hidden activation: relu, sigmoid, tanh, elu"
        ),
        output: AEOutput = typer.Option(
            "sigmoid", help="sigmoid (cross-entropy) or linear (squared error)"
        ),
        noise: Noise = typer.Option(None, help="dae: gaussian (default) or masking"),
        noise_level: float = typer.Option(
            None, help="dae: Gaussian std (default 0.3) or masking probability (default 0.25)"
        ),
        sparsity: float = typer.Option(None, help="sae: L1 activity penalty weight (default 0.05)"),
        contractive: float = typer.Option(
            None, help="cae: weight of the squared Jacobian norm (default 0.05)"
        ),
        epochs: int = typer.Option(20, help="training epochs (in total, when resuming)"),
        batch_size: int = typer.Option(128, help="minibatch size (images per optimiser step)"),
        lr: float = typer.Option(1e-3, help="Adam learning rate"),
        binarize: Binarize = typer.Option("none", help="none, dynamic or static"),
        n_train: int = typer.Option(None, help="use only the first N training images"),
        device: str = DEVICE,
        seed: int = SEED,
        out: str = typer.Option(None, help=f"output folder (default runs/{variant})"),
        resume: bool = typer.Option(False, help="continue from OUT/checkpoint.pt"),
        as_json: bool = JSON_OPT,
        tensorboard: bool = TENSORBOARD,
    ) -> None:
        enable_tensorboard(tensorboard)  # before any work: refuses a missing package
        options = {k: v for k, v in locals().items() if k not in ("variant", "tensorboard")}
        _train_autoencoder(variant, **options)

    command.__doc__ = help_text
    train_app.command(variant)(command)


for _variant, _help in (
    ("ae", "Train a deterministic autoencoder (squared error or cross-entropy)."),
    ("dae", "Train a denoising autoencoder (Gaussian or masking corruption; Vincent et al. 2010)."),
    ("sae", "Train a sparse autoencoder (L1 activity penalty)."),
    ("cae", "Train a contractive autoencoder (exact Jacobian penalty; Rifai et al. 2011)."),
):
    _register_autoencoder_command(_variant, _help)


# --------------------------------------------------------------------------- train cvae


@train_app.command("cvae")
def train_cvae_command(
    data: str = DATA,
    data_root: str = DATA_ROOT,
    download: bool = DOWNLOAD,
    latent_dim: int = typer.Option(
        2,
        help="latent size Z (small Z keeps the class in y: prior samples are recognised as "
        "their class; a large Z lets z carry the class too)",
    ),
    hidden: str = typer.Option("400", help="hidden widths, comma-separated"),
    likelihood: Likelihood = typer.Option("bernoulli", help="bernoulli or gaussian"),
    epochs: int = typer.Option(50, help="training epochs (in total, when resuming)"),
    batch_size: int = typer.Option(128, help="minibatch size (images per optimiser step)"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    binarize: Binarize = typer.Option("dynamic", help="dynamic, static or none"),
    elbo: ElboName = typer.Option("analytic-kl", help="trace, analytic-kl, jit or jit-analytic-kl"),
    n_train: int = typer.Option(None, help="use only the first N training images"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/cvae", help="output folder"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint.pt"),
    as_json: bool = JSON_OPT,
    tensorboard: bool = TENSORBOARD,
) -> None:
    """Train a conditional VAE p(x|z,y)p(z) with guide q(z|x,y) (Sohn et al. 2015)."""
    enable_tensorboard(tensorboard)  # before any work: refuses a missing package
    job = CVAEJob(
        data=data,
        data_root=data_root,
        download=download,
        binarize=binarize,
        n_train=n_train,
        latent_dim=latent_dim,
        hidden=parse_hidden(hidden),
        likelihood=likelihood,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        elbo=elbo,
        seed=seed,
        device=device,
        out=out,
        resume=resume,
        progress=not as_json,
    )
    summary = run_train_cvae(job)
    emit(
        summary,
        as_json,
        f"trained {summary['epochs']} epochs; train ELBO {summary['final_train_elbo']:.3f} "
        f"nats/image; checkpoint: {Path(summary['checkpoint']).resolve()}",
    )


# --------------------------------------------------------------------------- latent tools


CHECKPOINT = typer.Argument(..., help="checkpoint.pt of a VAE, CVAE, autoencoder or generator")
LATENT_DATA = typer.Option(None, help="dataset override (default: the checkpoint's)")
LATENT_OUT = typer.Option("runs/latent", help="output folder for the figure and arrays")
LABEL = typer.Option(None, help="conditional checkpoints: class to decode with")


def _setup(checkpoint: str, device: str, out: str, label: int | None = None) -> EncoderDecoder:
    check_output_dir(out, "out")
    pair = load_pair(checkpoint, device)
    if label is not None and not pair.num_classes:
        raise PplGenError(
            f"label {label}: the checkpoint's {pair.kind} model is unconditional (it takes no "
            "class); leave --label out"
        )
    if label is not None and not 0 <= label < pair.num_classes:
        raise PplGenError(f"label must be in 0..{pair.num_classes - 1}, got {label}")
    return pair


def _images(pair: EncoderDecoder, data, data_root, seed, n=None):
    x, y, _ = load_images(pair, data, data_root, n=n, seed=seed)
    return x, y


def _emit_tool(summary: dict, as_json: bool) -> None:
    emit(
        summary,
        as_json,
        f"{summary['tool']}: figure {summary['figure']}, arrays {summary['arrays']}",
    )


@latent_app.command("interpolate")
def latent_interpolate(
    checkpoint: str = CHECKPOINT,
    data: str = LATENT_DATA,
    data_root: str = DATA_ROOT,
    index_a: int = typer.Option(0, help="test image at the start"),
    index_b: int = typer.Option(1, help="test image at the end"),
    z_from: str = typer.Option(None, help="start code from a .npy file (instead of an image)"),
    z_to: str = typer.Option(None, help="end code from a .npy file"),
    steps: int = typer.Option(10, help="points on the path (>= 2)"),
    method: Method = typer.Option("slerp", help="slerp or lerp"),
    label: int = LABEL,
    device: str = DEVICE,
    seed: int = SEED,
    out: str = LATENT_OUT,
    as_json: bool = JSON_OPT,
) -> None:
    """Decode a linear or spherical interpolation between two codes."""
    if method not in METHODS:
        raise PplGenError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    pair = _setup(checkpoint, device, out, label)
    x = y = None
    if z_from is None and z_to is None:
        x, y = _images(pair, data, data_root, seed)
    summary = run_interpolate(
        pair,
        out,
        x,
        y,
        index_a=index_a,
        index_b=index_b,
        z_from=z_from,
        z_to=z_to,
        steps=steps,
        method=method,
        label=label,
    )
    _emit_tool(summary, as_json)


@latent_app.command("grid")
def latent_grid(
    checkpoint: str = CHECKPOINT,
    data: str = LATENT_DATA,
    data_root: str = DATA_ROOT,
    corners: str = typer.Option("0,1,2,3", help="4 test-image indices: TL,TR,BL,BR"),
    n: int = typer.Option(8, help="grid side"),
    method: Method = typer.Option("lerp", help="lerp (bilinear) or slerp"),
    label: int = LABEL,
    device: str = DEVICE,
    seed: int = SEED,
    out: str = LATENT_OUT,
    as_json: bool = JSON_OPT,
) -> None:
    """Decode the n x n grid spanned by the codes of four test images."""
    try:
        idx = tuple(int(i) for i in corners.split(","))
    except ValueError:
        raise PplGenError(f"corners must be 4 comma-separated indices, got {corners!r}") from None
    pair = _setup(checkpoint, device, out, label)
    x, y = _images(pair, data, data_root, seed)
    _emit_tool(run_grid(pair, out, x, y, corners=idx, n=n, method=method, label=label), as_json)


@latent_app.command("manifold")
def latent_manifold(
    checkpoint: str = CHECKPOINT,
    n: int = typer.Option(20, help="grid side"),
    label: int = LABEL,
    device: str = DEVICE,
    out: str = LATENT_OUT,
    as_json: bool = JSON_OPT,
) -> None:
    """Decode the 2-D latent manifold through the inverse Gaussian CDF (2-D latents only)."""
    pair = _setup(checkpoint, device, out, label)
    _emit_tool(run_manifold(pair, out, n=n, label=label), as_json)


@latent_app.command("attribute")
def latent_attribute(
    checkpoint: str = CHECKPOINT,
    attribute: str = typer.Option("thick", help="class:K, thick or thin"),
    data: str = LATENT_DATA,
    data_root: str = DATA_ROOT,
    n_points: int = typer.Option(None, help="test images used for the vector (default all)"),
    n_images: int = typer.Option(8, help="images the vector is applied to"),
    alphas: str = typer.Option("-2,-1,0,1,2", help="multiples of the vector, comma-separated"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = LATENT_OUT,
    as_json: bool = JSON_OPT,
) -> None:
    """Attribute vector (mean code with the attribute minus without) applied to images."""
    try:
        values = tuple(float(a) for a in alphas.split(","))
    except ValueError:
        raise PplGenError(f"alphas must be comma-separated numbers, got {alphas!r}") from None
    pair = _setup(checkpoint, device, out)
    x, y = _images(pair, data, data_root, seed, n_points)
    summary = run_attribute(pair, out, x, y, attribute=attribute, n_images=n_images, alphas=values)
    _emit_tool(summary, as_json)


@latent_app.command("tsne")
def latent_tsne(
    checkpoint: str = CHECKPOINT,
    data: str = LATENT_DATA,
    data_root: str = DATA_ROOT,
    n_points: int = typer.Option(1000, help="test images embedded"),
    perplexity: float = typer.Option(30.0, help="t-SNE perplexity (< number of points)"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = LATENT_OUT,
    as_json: bool = JSON_OPT,
) -> None:
    """t-SNE of the test codes and the latent scatter, coloured by label."""
    pair = _setup(checkpoint, device, out)
    x, y = _images(pair, data, data_root, seed, n_points)
    _emit_tool(run_tsne(pair, out, x, y, perplexity=perplexity, seed=seed), as_json)


@latent_app.command("reconstruct")
def latent_reconstruct(
    checkpoint: str = CHECKPOINT,
    data: str = LATENT_DATA,
    data_root: str = DATA_ROOT,
    n_images: int = typer.Option(10, help="test images shown"),
    noise: Noise = typer.Option(None, help="gaussian or masking: denoising before/after"),
    noise_level: float = typer.Option(0.3, help="Gaussian std or masking probability"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = LATENT_OUT,
    as_json: bool = JSON_OPT,
) -> None:
    """Reconstructions of test images (with --noise: corrupted input and its denoising)."""
    pair = _setup(checkpoint, device, out)
    x, y = _images(pair, data, data_root, seed)
    summary = run_reconstruct(
        pair, out, x, y, n_images=n_images, noise=noise, noise_level=noise_level, seed=seed
    )
    _emit_tool(summary, as_json)


# --------------------------------------------------------------------------- novelty


@app.command()
def novelty(
    model: NoveltyModel = typer.Option("ae", help="ae, dae, sae, cae or vae"),
    holdout_class: int = typer.Option(9, help="class left out of training (the novelty)"),
    data: str = DATA,
    data_root: str = DATA_ROOT,
    latent_dim: int = typer.Option(16, help="latent dimension Z"),
    hidden: str = typer.Option("256", help="hidden widths, comma-separated"),
    epochs: int = typer.Option(20, help="training epochs (in total, when resuming)"),
    batch_size: int = typer.Option(128, help="minibatch size (images per optimiser step)"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    iwae_k: int = typer.Option(100, help="vae: K of the -IWAE-K score"),
    n_train: int = typer.Option(None, help="use only the first N training images"),
    n_test: int = typer.Option(None, help="use only the first N test images"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/novelty", help="output folder (metrics.json, checkpoint.pt)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Train without one class and report the AUROC of detecting it as novel."""
    config = NoveltyConfig(
        model=model,
        holdout_class=holdout_class,
        data=data,
        data_root=data_root,
        latent_dim=latent_dim,
        hidden=parse_hidden(hidden),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        iwae_k=iwae_k,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        device=device,
        out=out,
        progress=not as_json,
    )
    metrics = run_novelty(config)
    scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics["auroc"].items())
    emit(
        metrics,
        as_json,
        f"{model} without class {holdout_class}: AUROC {scores}; "
        f"metrics: {(Path(out) / 'metrics.json').resolve()}",
    )


# --------------------------------------------------------------------------- evaluate


def _data_for(spec: dict, opts: EvaluateOptions):
    data = dict(spec.get("data") or {})
    name = opts.data or data.get("name")
    if name is None:
        raise PplGenError("data is required: the checkpoint does not record its dataset")
    return load_dataset(
        name,
        opts.data_root or data.get("root"),
        binarize=data.get("binarize", "none"),
        seed=data.get("seed", 0),
        n_test=opts.n_test,
    )


@evaluator("autoencoder")
def evaluate_autoencoder(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    """Test reconstruction loss (the model's own, per datapoint) and squared error."""
    model, state = load_autoencoder(opts.checkpoint, opts.device)
    spec = state.get("spec") or {}
    splits = _data_for(spec, opts)
    if splits.data_dim != model.data_dim:
        raise PplGenError(
            f"data: the autoencoder takes {model.data_dim} values per datapoint, "
            f"{splits.name} has {splits.data_dim}"
        )
    loss = reconstruction_errors(model, splits.test)
    sq = squared_errors(model, splits.test)
    n = int(loss.shape[0])
    units = "nats per datapoint" if model.output == "sigmoid" else "squared error per datapoint"
    result = {
        "checkpoint": opts.checkpoint,
        "variant": spec.get("variant"),
        "dataset": splits.name,
        "n_test": n,
        "test_reconstruction": float(loss.mean()),
        "test_reconstruction_se": float(loss.std() / math.sqrt(n)) if n > 1 else None,
        "test_squared_error": float(sq.mean()),
        "units": units,
    }
    message = (
        f"test reconstruction {result['test_reconstruction']:.3f} {units}, squared error "
        f"{result['test_squared_error']:.3f} per image ({n} test images)"
    )
    return result, message


@evaluator("cvae")
def evaluate_cvae(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    """Test ELBO and IWAE-K of log p(x|y) (nats per image) of a CVAE checkpoint."""
    model, guide, state = load_cvae(opts.checkpoint, opts.device)
    splits = _data_for(state.get("spec") or {}, opts)
    if splits.data_dim != model.image_dim or splits.test_labels is None:
        raise PplGenError(
            f"data: the CVAE takes labelled images of {model.image_dim} values, "
            f"{splits.name} has {splits.data_dim}"
        )
    device = module_device(model)
    bounds = cvae_bounds(
        model, guide, splits.test.to(device), splits.test_labels.to(device), opts.iwae_k
    )
    result = {
        "checkpoint": opts.checkpoint,
        "dataset": splits.name,
        "n_test": int(splits.test.shape[0]),
        **{f"test_{k}": v for k, v in bounds.summary().items() if k != "k"},
        "iwae_k": opts.iwae_k,
        "units": "nats per image, bounds on log p(x|y)",
    }
    message = (
        f"test ELBO {result['test_elbo']:.3f} ± {result['test_elbo_se']:.3f}, "
        f"IWAE-{opts.iwae_k} {result['test_iwae']:.3f} ± {result['test_iwae_se']:.3f} "
        f"nats per image (log p(x|y), {result['n_test']} test images)"
    )
    return result, message
