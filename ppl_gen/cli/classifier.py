"""CLI commands: ``ppl-gen train classifier`` (the MNIST judge used by the sample-quality
metrics; :mod:`ppl_gen.metrics.classifier`) and the ``evaluate`` handler for its checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from ppl_gen.cli.common import DEVICE, JSON, SEED, EvaluateOptions, emit, evaluator, train_app
from ppl_gen.data.datasets import default_data_root


@train_app.command("classifier")
def train_classifier_command(
    data_root: str = typer.Option(
        None, help="folder with MNIST/raw (torchvision layout; default ../shared/data/mnist)"
    ),
    epochs: int = typer.Option(10),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-3),
    n_train: int = typer.Option(None, help="use only the first N training images"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/classifier", help="output folder (lenet_mnist.pt, metrics.json)"),
    as_json: bool = JSON,
) -> None:
    """Train the LeNet-style MNIST classifier that scores generated digits (FD-LeNet,
    classifier Inception score, label agreement, mode coverage)."""
    from ppl_gen.core.io import check_output_dir, write_json
    from ppl_gen.data.datasets import load_dataset
    from ppl_gen.metrics.classifier import ClassifierConfig, save_classifier, train_classifier

    config = ClassifierConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        progress=not as_json,
    )
    config.validate()
    check_output_dir(out, "--out")
    root = data_root if data_root is not None else default_data_root()
    splits = load_dataset("mnist", root, seed=seed, n_train=n_train)
    net, metrics = train_classifier(
        splits.train, splits.train_labels, config, test_x=splits.test, test_y=splits.test_labels
    )
    from ppl_gen.metrics.classifier import accuracy

    metrics["val_accuracy"] = accuracy(net, splits.val, splits.val_labels)
    metrics["n_train"] = int(splits.train.shape[0])
    path = Path(out) / "lenet_mnist.pt"
    save_classifier(path, net, metrics, config)
    metrics["checkpoint"] = str(path)
    write_json(Path(out) / "metrics.json", metrics)
    emit(
        metrics,
        as_json,
        f"MNIST test accuracy {metrics['test_accuracy']:.4f} after {epochs} epochs "
        f"({metrics['train_seconds']:.0f} s); classifier: {path.resolve()}",
    )


@evaluator("classifier")
def evaluate_classifier(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    """Accuracy of the MNIST classifier on the MNIST test set (first ``--n-test`` images)."""
    from ppl_gen.data.datasets import load_dataset
    from ppl_gen.metrics.classifier import accuracy, load_classifier

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
