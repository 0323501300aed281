"""Shared pieces of the ``ppl-gen`` command line: the Typer apps, reusable options, output
helpers and the ``evaluate`` dispatch table.

Every command module registers itself on :data:`app` / :data:`train_app` (or with
:func:`evaluator`) when :mod:`ppl_gen.cli` imports it.  ``ppl-gen evaluate CHECKPOINT``
reads the checkpoint's ``kind`` (absent means a Pyro latent-variable model written by
``ppl-gen train vae``) and calls the handler registered for it.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer

from ppl_gen.adaptation.dann import ARCHS as DANN_ARCHS
from ppl_gen.autoencoders.base import ACTIVATIONS, OUTPUTS
from ppl_gen.autoencoders.build import ARCHS as AE_ARCHS
from ppl_gen.autoencoders.noise import NOISES
from ppl_gen.core.errors import SEED_MAX, PplGenError
from ppl_gen.core.precision import PRECISIONS
from ppl_gen.data.datasets import BINARIZE_MODES
from ppl_gen.gan.losses import LOSS_MODES
from ppl_gen.infer.objectives import ESTIMATORS, OBJECTIVES
from ppl_gen.latent.interpolate import METHODS
from ppl_gen.lvm.builders import COVARIANCES, GUIDES, MODELS
from ppl_gen.lvm.likelihoods import LIKELIHOODS

# Choice options: ``Literal`` annotations make them Click choices (listed in ``--help``,
# completed by the shell, refused with one line naming the flag), built from the values the
# library accepts.  ``Literal[tuple]`` is ``Literal[*tuple]``.
Binarize = Literal[BINARIZE_MODES]
Precision = Literal[PRECISIONS]
ElboName = Literal[("trace", "analytic-kl", "jit", "jit-analytic-kl")]
LatentModel = Literal[MODELS]
Likelihood = Literal[LIKELIHOODS]
Guide = Literal[GUIDES]
Covariance = Literal[COVARIANCES]
GanLoss = Literal[LOSS_MODES]
Activation = Literal[tuple(ACTIVATIONS)]
AEOutput = Literal[OUTPUTS]
AEArch = Literal[AE_ARCHS]
Noise = Literal[NOISES]
Method = Literal[METHODS]
DannArch = Literal[DANN_ARCHS]
Channels = Literal[("auto", "1", "3")]
Objective = Literal[OBJECTIVES]
Estimator = Literal[ESTIMATORS]

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Deep generative latent-variable models on Pyro: train, evaluate, compare.",
)


def package_version() -> str:
    """The installed ``ppl_gen`` distribution's version (package metadata), or the source
    tree's ``ppl_gen.__version__`` when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("ppl_gen")
    except metadata.PackageNotFoundError:
        from ppl_gen import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"ppl-gen {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="print the installed ppl_gen version and exit",
    ),
) -> None:
    """Deep generative latent-variable models on Pyro: train, evaluate, compare."""


train_app = typer.Typer(no_args_is_help=True, help="Train a model.", rich_markup_mode=None)
app.add_typer(train_app, name="train")

DATA_HELP = "digits (scikit-learn's bundled 8x8 digits), mnist, or a .npy/.npz file"

# Options shared by several commands (Typer option objects are plain, reusable metadata).
DATA = typer.Option("digits", help=DATA_HELP)
DATA_ROOT = typer.Option(None, help="folder with MNIST/raw (torchvision layout)")
DOWNLOAD = typer.Option(False, help="download MNIST into --data-root if missing")
BINARIZE = typer.Option(
    "dynamic", help="binarisation: dynamic (resampled each epoch), static or none"
)
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N")
SEED = typer.Option(
    0,
    min=0,
    max=SEED_MAX,
    help=f"random seed, 0..{SEED_MAX} (data split, initialisation, sampling)",
)
JSON = typer.Option(False, "--json", help="print the result as JSON")
RESUME = typer.Option(False, help="continue from OUT/checkpoint.pt")
TENSORBOARD = typer.Option(
    False,
    "--tensorboard",
    help="also write the per-epoch scalars of history.jsonl as TensorBoard events in "
    "OUT/tensorboard (needs the tensorboard package)",
)


#: Most importance samples (K x test points) one IWAE-K evaluation may draw.  At the
#: measured ~1e6-1e7 samples per second of a small MLP VAE on a CPU core this is minutes
#: to tens of minutes; beyond it, evaluate on fewer test points (``--n-test``) or lower K.
MAX_IWAE_SAMPLES = 10**9
#: Bytes per network weight kept in memory while training: the weight, its gradient and
#: Adam's two moment estimates, float32.
BYTES_PER_WEIGHT = 4 * 4
#: Test rows of the built-in datasets (for the IWAE cost estimate before loading them).
_TEST_ROWS = {"digits": 359, "mnist": 10000}


def parse_hidden(text: str, flag: str = "--hidden") -> tuple[int, ...]:
    """``"256,128"`` → ``(256, 128)``.

    Raises:
        PplGenError: naming ``flag`` unless ``text`` is comma-separated positive integers.
    """
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise PplGenError(
            f"{flag} must be comma-separated positive integers, got {text!r}"
        ) from None
    if not widths or any(w < 1 for w in widths):
        raise PplGenError(f"{flag} must be comma-separated positive integers, got {text!r}")
    return widths


def emit(obj: dict, as_json: bool, message: str) -> None:
    """Print ``obj`` as JSON (``--json``) or the human-readable ``message``."""
    if as_json:
        typer.echo(json.dumps(obj, indent=2))
    else:
        typer.echo(message)


@dataclass
class EvaluateOptions:
    """The options of ``ppl-gen evaluate``; each handler uses the ones that apply to its
    kind of checkpoint (``None`` means "the handler's default")."""

    checkpoint: str
    data: str | None = None
    data_root: str | None = None
    bsds_root: str | None = None
    classifier: str | None = None
    iwae_k: int = 1000
    n_test: int | None = None
    n_samples: int = 10000
    test_refit_steps: int = 500
    ais_steps: int | None = None
    ais_chains: int = 16
    device: str = "auto"
    seed: int = 0
    out: str | None = None
    as_json: bool = False


EvaluateHandler = Callable[[dict, EvaluateOptions], tuple[dict, str]]
EVALUATORS: dict[str, EvaluateHandler] = {}


def evaluator(kind: str) -> Callable[[EvaluateHandler], EvaluateHandler]:
    """Register ``handler(state, options) -> (result, message)`` for checkpoints whose
    ``state["kind"] == kind``."""

    def register(handler: EvaluateHandler) -> EvaluateHandler:
        EVALUATORS[kind] = handler
        return handler

    return register


#: Options of ``evaluate`` that only some kinds of checkpoint use (kinds not listed here
#: accept them all).  Giving one that the checkpoint's kind ignores is refused.
EVALUATE_OPTIONS: dict[str, frozenset[str]] = {
    "latent-variable": frozenset(
        {"data", "data_root", "iwae_k", "n_test", "test_refit_steps", "ais_steps", "ais_chains"}
    ),
    "autoencoder": frozenset({"data", "data_root", "n_test"}),
    "cvae": frozenset({"data", "data_root", "iwae_k", "n_test"}),
    "classifier": frozenset({"data_root", "n_test"}),
    "dann": frozenset({"data_root", "bsds_root", "n_test"}),
    **{
        kind: frozenset({"classifier", "data", "data_root", "bsds_root", "n_test", "n_samples"})
        | ({"ais_steps", "ais_chains"} if kind in ("gan", "dcgan") else set())
        for kind in ("gan", "dcgan", "cgan", "cyclegan")
    },
}
#: Kinds whose evaluate handler writes into ``--out`` itself; for the others ``evaluate``
#: writes ``OUT/metrics.json`` (the printed result).
WRITES_OUT = frozenset({"gan", "dcgan", "cgan", "stylegan", "cyclegan", "pix2pix"})
_SPECIFIC = (
    "data",
    "data_root",
    "bsds_root",
    "classifier",
    "iwae_k",
    "n_test",
    "n_samples",
    "test_refit_steps",
    "ais_steps",
    "ais_chains",
)


@app.command()
def evaluate(
    ctx: typer.Context,
    checkpoint: str = typer.Argument(..., help="checkpoint.pt written by ppl-gen train"),
    data: str = typer.Option(None, help="dataset override (default: the training dataset)"),
    data_root: str = typer.Option(None, help="data root override (MNIST folder)"),
    bsds_root: str = typer.Option(None, help="BSDS500 photographs (MNIST-M) override"),
    classifier: str = typer.Option(
        None, help="generators: MNIST classifier checkpoint (default: the cached one)"
    ),
    iwae_k: int = typer.Option(
        1000,
        help=f"VAEs, CVAEs: K of the IWAE-K bound (K x test points <= {MAX_IWAE_SAMPLES:.0e})",
    ),
    n_test: int = typer.Option(None, help="evaluate only the first N test images"),
    n_samples: int = typer.Option(10000, help="generators: samples drawn for the metrics"),
    test_refit_steps: int = typer.Option(500, help="mean-field guides: Adam steps on test data"),
    ais_steps: int = typer.Option(
        None, help="VAEs, generators: also estimate test log p(x) by AIS with T steps"
    ),
    ais_chains: int = typer.Option(16, help="AIS chains per test image (with --ais-steps)"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option(
        None, help="folder for metrics.json (and the figures of generators); optional"
    ),
    as_json: bool = JSON,
) -> None:
    """Evaluate a trained checkpoint: test ELBO and IWAE-K for VAEs, sample quality for
    generators, target accuracy for domain adaptation — whatever fits its kind."""
    from ppl_gen.core.checkpoint import load_checkpoint
    from ppl_gen.core.errors import require_positive_int
    from ppl_gen.engine.rng import seed_everything

    require_positive_int("--iwae-k", iwae_k)
    require_positive_int("--n-samples", n_samples)
    require_positive_int("--test-refit-steps", test_refit_steps)
    if n_test is not None:
        require_positive_int("--n-test", n_test)
    if ais_steps is not None:
        require_positive_int("--ais-steps", ais_steps)
    require_positive_int("--ais-chains", ais_chains)
    state = load_checkpoint(checkpoint)
    kind = state.get("kind", "latent-variable")
    if kind not in EVALUATORS:
        raise PplGenError(
            f"CHECKPOINT: no evaluator for checkpoints of kind {kind!r} "
            f"(known: {', '.join(sorted(EVALUATORS))})"
        )
    used = EVALUATE_OPTIONS.get(kind)
    if used is not None:
        for name in _SPECIFIC:
            if name not in used and _given(ctx, name):
                takers = sorted(k for k, opts in EVALUATE_OPTIONS.items() if name in opts)
                raise PplGenError(
                    f"{name} does not apply to {kind} checkpoints (it is used for "
                    f"{', '.join(takers) or 'no kind'}); leave it out"
                )
    opts = EvaluateOptions(
        checkpoint=checkpoint,
        data=data,
        data_root=data_root,
        bsds_root=bsds_root,
        classifier=classifier,
        iwae_k=iwae_k,
        n_test=n_test,
        n_samples=n_samples,
        test_refit_steps=test_refit_steps,
        ais_steps=ais_steps,
        ais_chains=ais_chains,
        device=device,
        seed=seed,
        out=out,
        as_json=as_json,
    )
    seed_everything(seed)
    result, message = EVALUATORS[kind](state, opts)
    if out is not None and kind not in WRITES_OUT:
        from ppl_gen.core.io import output_lock, write_json

        with output_lock(out):
            path = write_json(Path(out) / "metrics.json", result)
        message += f"; wrote {path}"
    emit(result, as_json, message)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (or by an environment
    variable), not left at its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


# --------------------------------------------------------------------------- pre-flight checks


def preflight(command: str, params: dict) -> None:
    """Checks every command runs on its parsed options before doing any work (called by
    :func:`ppl_gen.cli.main` for each command): the output folder can be written
    (``--out``, :func:`ppl_gen.core.io.check_output_dir`), the networks the sizes describe
    fit in memory (:func:`check_model_memory`), and IWAE-K evaluations stay within
    :data:`MAX_IWAE_SAMPLES`.

    Args:
        command: the command's path, e.g. ``"train vae"``.
        params: its parsed options, by parameter name.

    Raises:
        PplGenError: naming the option at fault.
    """
    from ppl_gen.core.io import check_output_dir

    out = params.get("out")
    if isinstance(out, str) and out:
        check_output_dir(out, "out")
    check_model_memory(params)
    k = params.get("iwae_k")
    if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
        n = params.get("n_test")
        if not isinstance(n, int) or n < 1:
            data = params.get("data")
            n = _TEST_ROWS.get(str(data).lower(), 1) if data else 1
        check_iwae_cost(k, n)


def check_iwae_cost(k: int, n_points: int) -> None:
    """Refuse an IWAE-K evaluation that would draw more than :data:`MAX_IWAE_SAMPLES`
    importance samples (``k * n_points``).

    Raises:
        PplGenError: naming ``iwae_k``, with the estimated count.
    """
    total = k * n_points
    if total > MAX_IWAE_SAMPLES:
        raise PplGenError(
            f"iwae_k {k} x {n_points} test point(s) = {total:.2e} importance samples exceeds "
            f"the limit of {MAX_IWAE_SAMPLES:.0e} (hours of compute); lower --iwae-k or --n-test"
        )


def _widths(params: dict) -> dict[str, list[int]]:
    """The layer widths each size option implies, by option name."""
    found: dict[str, list[int]] = {}
    for name, value in params.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and (
            name in ("ngf", "ndf", "components") or name.endswith(("_dim", "_width", "_channels"))
        ):
            found[name] = [value]
        elif name == "hidden" and isinstance(value, str):
            try:
                found[name] = [int(w) for w in value.split(",")]
            except ValueError:
                pass  # parse_hidden reports it
    return found


def estimated_model_bytes(params: dict) -> tuple[int, str | None]:
    """A lower bound on the training memory of the networks the size options describe.

    Every width ``w`` of ``--hidden`` / ``--latent-dim`` / ``--ngf`` / ... meets at least
    its neighbours: an MLP ``D -> hidden... -> latent`` (and back) holds
    ``2 * sum(w_i * w_{i+1})`` weights with ``D >= 1``; a layer of ``ngf`` filters (or any
    other ``*_dim`` width) meets one of its own kind (``>= 9 * ngf**2`` weights, 3x3
    kernels); a mixture holds ``>= components`` parameters.  Each weight costs
    :data:`BYTES_PER_WEIGHT`.

    Returns:
        ``(bytes, option)``: the estimate and the option contributing the most (``None``
        when no size option is set).
    """
    widths = _widths(params)
    chain = [1, *widths.get("hidden", []), *widths.get("latent_dim", [])]
    contributions: dict[str, int] = {}
    mlp = 2 * sum(a * b for a, b in itertools.pairwise(chain))
    if len(chain) > 1:
        biggest = max(widths.get("hidden", []) + widths.get("latent_dim", []), default=0)
        owner = "latent_dim" if biggest in widths.get("latent_dim", []) else "hidden"
        contributions[owner] = mlp
    for name, (w, *_) in ((n, v) for n, v in widths.items() if n not in ("hidden", "latent_dim")):
        contributions[name] = w if name == "components" else 9 * w * w
    if not contributions:
        return 0, None
    owner = max(contributions, key=contributions.get)
    return BYTES_PER_WEIGHT * sum(contributions.values()), owner


def memory_bytes(device: str | None) -> int:
    """Total memory of ``device`` in bytes: the GPU's for ``cuda``/``cuda:N`` (when one is
    present), else the machine's physical memory (``0`` when unknown)."""
    import torch

    if device and str(device).startswith("cuda") and torch.cuda.is_available():
        index = int(str(device).split(":")[1]) if ":" in str(device) else 0
        try:
            return int(torch.cuda.get_device_properties(index).total_memory)
        except (RuntimeError, AssertionError):
            return 0
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 0


def check_model_memory(params: dict) -> None:
    """Refuse size options whose networks cannot fit in the device's memory
    (:func:`estimated_model_bytes` against :func:`memory_bytes`), before allocating.

    Raises:
        PplGenError: naming the size option that contributes the most.
    """
    need, owner = estimated_model_bytes(params)
    if owner is None:
        return
    have = memory_bytes(params.get("device"))
    if have and need > have:
        value = params.get(owner)
        raise PplGenError(
            f"{owner} {value}: the networks would need at least {need / 2**30:,.0f} GiB "
            f"(weights, gradients and Adam state, float32), more than the "
            f"{have / 2**30:,.0f} GiB of memory here; choose smaller sizes"
        )
