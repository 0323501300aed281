"""CLI commands: ``ppl-gen train classifier`` (the MNIST judge used by the sample-quality
metrics; :mod:`ppl_gen.metrics.classifier`, :mod:`ppl_gen.jobs.train_classifier`) and the
``evaluate`` handler for its checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from ppl_gen.cli.common import (
    DEVICE,
    JSON,
    SEED,
    TENSORBOARD,
    EvaluateOptions,
    emit,
    evaluator,
    train_app,
)
from ppl_gen.data.datasets import default_data_root, load_dataset
from ppl_gen.engine.history import enable_tensorboard
from ppl_gen.jobs.train_classifier import ClassifierJob, run_train_classifier
from ppl_gen.metrics.classifier import ClassifierConfig, accuracy, load_classifier


@train_app.command("classifier")
def train_classifier_command(
    data_root: str = typer.Option(
        None, help="folder with MNIST/raw (torchvision layout; default ../shared/data/mnist)"
    ),
    epochs: int = typer.Option(10, help="training epochs (in total, when resuming)"),
    batch_size: int = typer.Option(128, help="minibatch size (images per optimiser step)"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    n_train: int = typer.Option(None, help="use only the first N training images"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option(
        None,
        help="output folder (lenet_mnist.pt, metrics.json); default: the cache folder "
        "($PPL_GEN_CACHE, else $XDG_CACHE_HOME/ppl_gen, else ~/.cache/ppl_gen), where "
        "evaluate looks for the judge",
    ),
    as_json: bool = JSON,
    tensorboard: bool = TENSORBOARD,
) -> None:
    """Train the LeNet-style MNIST classifier that scores generated digits (FD-LeNet,
    classifier Inception score, label agreement, mode coverage)."""
    enable_tensorboard(tensorboard)  # before any work: refuses a missing package
    config = ClassifierConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        progress=not as_json,
    )
    root = data_root if data_root is not None else default_data_root()
    metrics = run_train_classifier(ClassifierJob(root, n_train=n_train, out=out, train=config))
    emit(
        metrics,
        as_json,
        f"MNIST test accuracy {metrics['test_accuracy']:.4f} after {metrics['epochs']} epochs "
        f"({metrics['train_seconds']:.0f} s); classifier: {Path(metrics['checkpoint']).resolve()}",
    )


@evaluator("classifier")
def evaluate_classifier(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    """Accuracy of the MNIST classifier on the MNIST test set (first ``--n-test`` images)."""
    net = load_classifier(opts.checkpoint, opts.device)
    root = opts.data_root if opts.data_root is not None else default_data_root()
    splits = load_dataset("mnist", root, n_test=opts.n_test)
    acc = accuracy(net, splits.test, splits.test_labels)
    result = {
        "checkpoint": opts.checkpoint,
        "n_test": int(splits.test.shape[0]),
        "test_accuracy": acc,
    }
    return result, f"MNIST test accuracy {acc:.4f} ({result['n_test']} images)"
