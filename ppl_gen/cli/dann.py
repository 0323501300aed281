"""CLI commands for domain adaptation: ``ppl-gen train dann`` and the ``evaluate`` handler
for DANN checkpoints.

``train dann`` is :func:`ppl_gen.adaptation.dann_trainer.train_dann` run twice on the
same data -- the source-only baseline and DANN (plus, with ``--train-on-target``, the
train-on-target upper bound) -- followed by
:func:`ppl_gen.adaptation.domain_analysis.proxy_a_distance`
and :func:`ppl_gen.adaptation.domain_analysis.tsne_embedding` on the features of both
networks (the whole experiment is :func:`ppl_gen.jobs.dann.run_dann_experiment`).

Data-parallel under ``torchrun --nproc-per-node N -m ppl_gen train dann ...`` (each process
takes its part of every global batch; rank 0 alone evaluates, writes and prints).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ppl_gen.adaptation.dann_trainer import (
    DANNConfig,
    accuracy,
    load_domain,
    match_channels,
    model_from_checkpoint,
)
from ppl_gen.cli.common import DEVICE, SEED, EvaluateOptions, emit, evaluator, train_app
from ppl_gen.core.distributed import init_from_env
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.io import check_output_dir
from ppl_gen.jobs.dann import run_dann_experiment


def _domains(source, target, data_root, bsds_root, seed, n_train, n_test):

    src = load_domain(
        source,
        data_root=data_root,
        bsds_root=bsds_root,
        seed=seed,
        n_train=n_train,
        n_test=n_test,
        flag="--source",
    )
    tgt = load_domain(
        target,
        data_root=data_root,
        bsds_root=bsds_root,
        seed=seed,
        n_train=n_train,
        n_test=n_test,
        flag="--target",
    )
    return match_channels(src, tgt)


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
    arch: str = typer.Option(
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
    precision: str = typer.Option(
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
) -> None:
    """Domain-adversarial training (DANN, Ganin et al. JMLR 2016) with a source-only
    baseline; writes metrics.json with target and source test accuracy and the proxy
    A-distance before and after adaptation (data-parallel under torchrun)."""

    base = DANNConfig(
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
    ).validate()
    require_positive_int("--pad-points", pad_points)
    if pad_points < 8:
        raise PplGenError(f"--pad-points must be at least 8, got {pad_points}")
    out_dir = check_output_dir(out, "--out")
    src, tgt = _domains(source, target, data_root, bsds_root, seed, n_train, n_test)
    spec = {
        "source": source,
        "target": target,
        "data_root": data_root,
        "bsds_root": bsds_root,
        "seed": seed,
        "n_test": n_test,
    }
    ctx = init_from_env(device)
    metrics = run_dann_experiment(
        src,
        tgt,
        base,
        out_dir=out_dir,
        train_on_target=train_on_target,
        resume=resume,
        pad_points=pad_points,
        tsne=tsne,
        spec=spec,
        dist=ctx,
    )
    if not ctx.is_main:  # rank 0 alone prints
        return
    message = (
        f"target ({tgt.name}) accuracy: DANN {metrics['target_accuracy']:.4f}, source only "
        f"{metrics['source_only_target_accuracy']:.4f}"
        + (
            f", train on target {metrics['train_on_target_accuracy']:.4f}"
            if train_on_target
            else ""
        )
        + f"; source accuracy {metrics['source_accuracy']:.4f}; proxy A-distance "
        f"{metrics['proxy_a_distance_before']:.3f} -> {metrics['proxy_a_distance_after']:.3f}; "
        f"wrote {out_dir / 'metrics.json'}"
    )
    emit(metrics, as_json, message)


@evaluator("dann")
def evaluate_dann(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    """Target and source test accuracy of a DANN (or baseline) checkpoint."""

    spec = state.get("spec") or {}
    if "source" not in spec or "target" not in spec:
        raise PplGenError("CHECKPOINT: the DANN checkpoint does not record its domains")
    model = model_from_checkpoint(state, opts.device)
    src, tgt = _domains(
        spec["source"],
        spec["target"],
        opts.data_root if opts.data_root is not None else spec.get("data_root"),
        opts.bsds_root if opts.bsds_root is not None else spec.get("bsds_root"),
        spec.get("seed", 0),
        1,
        opts.n_test if opts.n_test is not None else spec.get("n_test"),
    )
    result = {
        "run": spec.get("run"),
        "mode": state.get("config", {}).get("mode"),
        "epoch": state.get("epoch"),
        "source": src.name,
        "target": tgt.name,
        "n_test_target": int(tgt.x_test.shape[0]),
        "target_accuracy": accuracy(model, tgt.x_test, tgt.y_test),
        "source_accuracy": accuracy(model, src.x_test, src.y_test),
    }
    message = (
        f"{Path(opts.checkpoint).name} ({result['mode']}, epoch {result['epoch']}): target "
        f"({tgt.name}) accuracy {result['target_accuracy']:.4f}, source ({src.name}) "
        f"accuracy {result['source_accuracy']:.4f}"
    )
    return result, message
