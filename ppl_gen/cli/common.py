"""Shared pieces of the ``ppl-gen`` command line: the Typer apps, reusable options, output
helpers and the ``evaluate`` dispatch table.

Every command module registers itself on :data:`app` / :data:`train_app` (or with
:func:`evaluator`) when :mod:`ppl_gen.cli` imports it.  ``ppl-gen evaluate CHECKPOINT``
reads the checkpoint's ``kind`` (absent means a Pyro latent-variable model written by
``ppl-gen train vae``) and calls the handler registered for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import typer

from ppl_gen.core.errors import PplGenError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Deep generative latent-variable models on Pyro: train, evaluate, compare.",
)
train_app = typer.Typer(no_args_is_help=True, help="Train a model.", rich_markup_mode=None)
app.add_typer(train_app, name="train")

DATA_HELP = "digits (scikit-learn's bundled 8x8 digits), mnist, or a .npy/.npz file"

# Options shared by several commands (Typer option objects are plain, reusable metadata).
DATA = typer.Option("digits", help=DATA_HELP)
DATA_ROOT = typer.Option(None, help="folder with MNIST/raw (torchvision layout)")
DOWNLOAD = typer.Option(False, help="download MNIST into --data-root if missing")
BINARIZE = typer.Option("dynamic", help="dynamic, static or none")
DEVICE = typer.Option("auto", help="auto, cpu, cuda or cuda:N")
SEED = typer.Option(0, help="random seed (data split, initialisation, sampling)")
JSON = typer.Option(False, "--json", help="print the result as JSON")
RESUME = typer.Option(False, help="continue from OUT/checkpoint.pt")
TENSORBOARD = typer.Option(
    False,
    "--tensorboard",
    help="also write the per-epoch scalars of history.jsonl as TensorBoard events in "
    "OUT/tensorboard (needs the tensorboard package)",
)


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


@app.command()
def evaluate(
    checkpoint: str = typer.Argument(..., help="checkpoint.pt written by ppl-gen train"),
    data: str = typer.Option(None, help="dataset override (default: the training dataset)"),
    data_root: str = typer.Option(None, help="data root override (MNIST folder)"),
    bsds_root: str = typer.Option(None, help="BSDS500 photographs (MNIST-M) override"),
    classifier: str = typer.Option(
        None, help="generators: MNIST classifier checkpoint (default: the cached one)"
    ),
    iwae_k: int = typer.Option(1000, help="VAEs: K of the IWAE-K bound"),
    n_test: int = typer.Option(None, help="evaluate only the first N test images"),
    n_samples: int = typer.Option(10000, help="generators: samples drawn for the metrics"),
    test_refit_steps: int = typer.Option(500, help="mean-field guides: Adam steps on test data"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option(None, help="folder for figures and metrics.json (optional)"),
    as_json: bool = JSON,
) -> None:
    """Evaluate a trained checkpoint: test ELBO and IWAE-K for VAEs, sample quality for
    generators, target accuracy for domain adaptation — whatever fits its kind."""
    from ppl_gen.core.checkpoint import load_checkpoint
    from ppl_gen.core.errors import require_positive_int

    require_positive_int("--iwae-k", iwae_k)
    require_positive_int("--n-samples", n_samples)
    require_positive_int("--test-refit-steps", test_refit_steps)
    if n_test is not None:
        require_positive_int("--n-test", n_test)
    state = load_checkpoint(checkpoint)
    kind = state.get("kind", "latent-variable")
    if kind not in EVALUATORS:
        raise PplGenError(
            f"CHECKPOINT: no evaluator for checkpoints of kind {kind!r} "
            f"(known: {', '.join(sorted(EVALUATORS))})"
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
        device=device,
        seed=seed,
        out=out,
        as_json=as_json,
    )
    result, message = EVALUATORS[kind](state, opts)
    emit(result, as_json, message)
