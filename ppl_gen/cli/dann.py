"""CLI commands for domain adaptation: ``ppl-gen train dann`` and the ``evaluate`` handler
for DANN checkpoints.

Both parse their options and call the job (:func:`ppl_gen.jobs.dann.run_dann_job`: the
source-only baseline, DANN and optionally the train-on-target upper bound, trained with
:func:`ppl_gen.adaptation.dann_trainer.train_dann`, then test accuracies, the proxy
A-distance and t-SNE of their features; :func:`ppl_gen.jobs.dann.evaluate_dann_checkpoint`).
The library's messages name parameters; :func:`ppl_gen.cli.flag_message` turns the leading
one into its flag (``pad_points must be ...`` -> ``--pad-points must be ...``).

Data-parallel under ``torchrun --nproc-per-node N -m ppl_gen train dann ...`` (each process
takes its part of every global batch; rank 0 alone evaluates, writes and prints).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ppl_gen.adaptation.dann_trainer import DANNConfig
from ppl_gen.cli.common import (
    DEVICE,
    SEED,
    TENSORBOARD,
    DannArch,
    EvaluateOptions,
    Precision,
    emit,
    evaluator,
    train_app,
)
from ppl_gen.core.distributed import init_from_env
from ppl_gen.engine.history import enable_tensorboard
from ppl_gen.jobs.dann import evaluate_dann_checkpoint, run_dann_job


@train_app.command("dann")
def train_dann_command(
    source: str = typer.Option("mnist", help="source domain (labelled): mnist, mnistm or a .npz"),
    target: str = typer.Option(
        "mnistm", help="target domain (unlabelled): mnistm, mnist or a .npz"
    ),
    data_root: str = typer.Option(
        None, help="folder with MNIST/raw (default ../shared/data/mnist)"
    ),
    bsds_root: str = typer.Option(
        None, help="folder of photographs for MNIST-M (default ../shared/data/bsds500/train)"
    ),
    arch: DannArch = typer.Option(
        "bn", help="bn (paper layout + batch norm, dropout) or paper (Ganin et al. 2016)"
    ),
    epochs: int = typer.Option(20, help="epochs over the source training images"),
    batch_size: int = typer.Option(128, help="images per SGD step, half source half target"),
    lr: float = typer.Option(0.01, help="initial learning rate mu_0"),
    separate_batches: bool = typer.Option(
        True, help="separate source / target forward passes (per-domain batch-norm statistics)"
    ),
    n_train: int = typer.Option(None, help="use only the first N training images per domain"),
    n_test: int = typer.Option(None, help="use only the first N test images per domain"),
    train_on_target: bool = typer.Option(
        False, help="also train on labelled target images (the upper bound)"
    ),
    pad_points: int = typer.Option(2000, help="test images per domain for the proxy A-distance"),
    tsne: bool = typer.Option(True, help="draw tsne.png (features before / after adaptation)"),
    precision: Precision = typer.Option(
        "fp32", help="fp32, or bf16 (training forward passes under torch.autocast)"
    ),
    deterministic: bool = typer.Option(
        False, help="torch.use_deterministic_algorithms (bit-reproducible, may be slower)"
    ),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/dann", help="output folder (checkpoints, metrics.json, figures)"),
    resume: bool = typer.Option(False, help="continue from the checkpoints in OUT"),
    as_json: bool = typer.Option(False, "--json", help="print metrics.json"),
    tensorboard: bool = TENSORBOARD,
) -> None:
    """Domain-adversarial training (DANN, Ganin et al. JMLR 2016) with a source-only
    baseline; writes metrics.json with target and source test accuracy and the proxy
    A-distance before and after adaptation (data-parallel under torchrun)."""
    enable_tensorboard(tensorboard)  # before any work: refuses a missing package
    config = DANNConfig(
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        separate_batches=separate_batches,
        seed=seed,
        device=device,
        progress=not as_json,
        precision=precision,
        deterministic=deterministic,
    )
    ctx = init_from_env(config.validate().device)
    metrics = run_dann_job(
        source,
        target,
        config,
        out=out,
        data_root=data_root,
        bsds_root=bsds_root,
        n_train=n_train,
        n_test=n_test,
        train_on_target=train_on_target,
        resume=resume,
        pad_points=pad_points,
        tsne=tsne,
        dist=ctx,
    )
    if metrics is None:  # another rank of a torchrun job: rank 0 reports
        return
    if not ctx.is_main:  # rank 0 alone prints
        return
    message = (
        f"target ({metrics['target']}) accuracy: DANN {metrics['target_accuracy']:.4f}, "
        f"source only {metrics['source_only_target_accuracy']:.4f}"
        + (
            f", train on target {metrics['train_on_target_accuracy']:.4f}"
            if train_on_target
            else ""
        )
        + f"; source accuracy {metrics['source_accuracy']:.4f}; proxy A-distance "
        f"{metrics['proxy_a_distance_before']:.3f} -> {metrics['proxy_a_distance_after']:.3f}; "
        f"wrote {Path(out) / 'metrics.json'}"
    )
    emit(metrics, as_json, message)


@evaluator("dann")
def evaluate_dann(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    """Target and source test accuracy of a DANN (or baseline) checkpoint."""
    result = evaluate_dann_checkpoint(
        state,
        device=opts.device,
        data_root=opts.data_root,
        bsds_root=opts.bsds_root,
        n_test=opts.n_test,
    )
    message = (
        f"{Path(opts.checkpoint).name} ({result['mode']}, epoch {result['epoch']}): target "
        f"({result['target']}) accuracy {result['target_accuracy']:.4f}, source "
        f"({result['source']}) accuracy {result['source_accuracy']:.4f}"
    )
    return result, message
