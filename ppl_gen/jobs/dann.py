"""The DANN digits experiment (Ganin et al. JMLR 2016, Table 2 and fig. 4) as one job:
source-only, DANN and optionally train-on-target networks, their test accuracies, the
proxy A-distance of test features before and after adaptation, the t-SNE figure, the
training curves and ``metrics.json``.

* :func:`run_dann_job` is what ``ppl-gen train dann`` runs: it checks the settings and the
  output folder, reads both domains (:func:`load_domains`) and runs
  :func:`run_dann_experiment` on them.
* :func:`evaluate_dann_checkpoint` is what ``ppl-gen evaluate`` runs on a DANN checkpoint.

Error messages name the Python parameters (``pad_points must be ...``, ``source ...``);
the command line maps a message's leading name to its flag.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ppl_gen.adaptation.dann import DANN
from ppl_gen.adaptation.dann_trainer import DANNConfig, model_from_checkpoint, train_dann
from ppl_gen.adaptation.domain_analysis import proxy_a_distance, tsne_embedding
from ppl_gen.adaptation.features import accuracy, extract_features
from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.distributed import DistributedContext, init_from_env
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.io import check_output_dir, output_lock, write_json
from ppl_gen.data.domains import DomainData, load_domain, match_channels
from ppl_gen.viz.adaptation import plot_history, plot_tsne


def adaptation_report(
    before: DANN,
    after: DANN,
    source: DomainData,
    target: DomainData,
    *,
    n_points: int = 2000,
    seed: int = 0,
    tsne_path: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Proxy A-distance between source and target test features of two networks (the
    source-only one ``before`` adaptation and DANN ``after`` it), and optionally the t-SNE
    figure of both (Ganin et al. 2016, fig. 4).

    Args:
        before, after: trained :class:`ppl_gen.adaptation.dann.DANN` networks.
        source, target: :class:`ppl_gen.data.domains.DomainData`; ``n_points``
            test images of each (a seeded random subset) are used.
        n_points: images per domain (at most 1,000 of them go into t-SNE).
        seed: seeds the subsets, the classifier split and t-SNE.
        tsne_path: where to draw the t-SNE figure (``None``: no figure).

    Returns:
        ``proxy_a_distance_before`` / ``_after`` and ``proxy_a_error_before`` / ``_after``.
    """

    def subset(x: torch.Tensor, s: int) -> torch.Tensor:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(s))
        return x[idx[:n_points]]

    xs, xt = subset(source.x_test, seed), subset(target.x_test, seed + 1)
    out: dict[str, float] = {}
    feats = {}
    for label, model in (("before", before), ("after", after)):
        fs, ft = extract_features(model, xs), extract_features(model, xt)
        feats[label] = (fs, ft)
        pad = proxy_a_distance(fs, ft, seed=seed)
        out[f"proxy_a_distance_{label}"] = pad.distance
        out[f"proxy_a_error_{label}"] = pad.error
    if tsne_path is not None:
        k = min(n_points, 1000)
        titles = {"before": "before adaptation (source only)", "after": "after adaptation (DANN)"}
        panels = {
            titles[label]: tsne_embedding(fs[:k], ft[:k], seed=seed)
            for label, (fs, ft) in feats.items()
        }
        plot_tsne(panels, tsne_path, (source.name, target.name))
    return out


def run_dann_experiment(
    source: DomainData,
    target: DomainData,
    config: DANNConfig,
    *,
    out_dir: str | os.PathLike,
    train_on_target: bool = False,
    resume: bool = False,
    pad_points: int = 2000,
    tsne: bool = True,
    spec: dict | None = None,
    dist: DistributedContext | None = None,
) -> dict | None:
    """The paper's digits experiment (Ganin et al. 2016, Table 2 and fig. 4) on one pair of
    domains: source-only, DANN and (optionally) train-on-target networks trained with the
    same ``config`` (its ``mode`` and ``checkpoint`` are set per run), then test accuracies,
    proxy A-distance of the test features before (source-only network) and after (DANN)
    adaptation, and figures.

    Writes to ``out_dir``: ``source_only.pt``, ``checkpoint.pt`` (DANN), ``target_only.pt``,
    ``loss_curves.png``, ``tsne.png`` (with ``tsne``) and ``metrics.json``.  Under torchrun
    the training is data-parallel and rank 0 alone evaluates and writes (every rank returns
    rank 0's metrics).

    Args:
        source, target: labelled domains with matching channels (:func:`match_channels`).
        config: shared training settings.
        out_dir: output folder.
        train_on_target: also train on the labelled target training images (upper bound).
        resume: continue each run from its checkpoint in ``out_dir``.
        pad_points: test images per domain for the proxy A-distance and t-SNE (at most
            1,000 of them are embedded).
        tsne: draw the t-SNE figure.
        spec: extra JSON-able description stored in the checkpoints.
        dist: the data-parallel context (default :func:`ppl_gen.core.distributed.init_from_env`).

    Returns:
        On rank 0 (and in one process) the metrics dict written to ``metrics.json``
        (``None`` on the other ranks of a torchrun job): accuracies (fractions of test images)
        ``target_accuracy``, ``source_accuracy`` (DANN), ``source_only_target_accuracy``,
        ``source_only_source_accuracy``, ``train_on_target_accuracy`` (if trained),
        ``proxy_a_distance_before`` / ``_after`` (and the held-out errors), seconds, config
        and per-epoch histories.

    Raises:
        PplGenError: unlabelled test images, ``pad_points`` below 8, ``out_dir`` in use
            by another run, bad settings (see :func:`train_dann`), naming the parameter.
        TrainingDiverged: a run's loss became non-finite or exploded.
        RankFailed: another rank stopped (its checkpoint is kept).
    """
    _check_pad_points(pad_points)
    if source.y_test is None or target.y_test is None:
        raise PplGenError("source / target need labelled test images to measure accuracy")
    if train_on_target and target.y_train is None:
        raise PplGenError("train_on_target needs labelled target training images")
    out = Path(out_dir)
    ctx = dist if dist is not None else init_from_env(config.device)
    # Rank 0 holds the folder for the whole experiment (the trainers' own locks nest in it).
    with output_lock(out) if ctx.is_main else contextlib.nullcontext():
        metrics = _experiment(
            source, target, config, out, ctx, train_on_target, resume, pad_points, tsne, spec
        )
    # No collective here: the other ranks would wait (up to the collective timeout) while
    # rank 0 alone evaluates and draws; they return None.
    return metrics


def _check_pad_points(pad_points: int) -> None:
    require_positive_int("pad_points", pad_points)
    if pad_points < 8:
        raise PplGenError(f"pad_points must be at least 8, got {pad_points}")


def _experiment(
    source: DomainData,
    target: DomainData,
    config: DANNConfig,
    out: Path,
    ctx: DistributedContext,
    train_on_target: bool,
    resume: bool,
    pad_points: int,
    tsne: bool,
    spec: dict | None,
) -> dict | None:
    """:func:`run_dann_experiment` inside the folder lock; the metrics on rank 0, ``None``
    on the other ranks."""
    runs = {"source_only": ("source-only", source), "dann": ("dann", source)}
    if train_on_target:
        runs["target_only"] = ("source-only", target)
    checkpoints = {n: out / ("checkpoint.pt" if n == "dann" else f"{n}.pt") for n in runs}
    if resume and ctx.is_main:  # every checkpoint is read (safely) before any training
        for ckpt in checkpoints.values():
            if ckpt.exists():
                load_checkpoint(ckpt)
    models, seconds, history = {}, {}, {}
    for name, (mode, train_domain) in runs.items():
        run_config = DANNConfig(
            **{**asdict(config), "mode": mode, "checkpoint": str(checkpoints[name])}
        )
        if config.progress and ctx.is_main:
            tqdm.write(f"training {name} ({mode}) ...")
        t0 = time.perf_counter()
        result = train_dann(
            train_domain,
            target,
            run_config,
            resume=resume,
            spec={**(spec or {}), "run": name},
            dist=ctx,
        )
        models[name], history[name] = result.model, result.history
        seconds[name] = {
            "train_seconds": result.seconds,
            "wall_seconds": time.perf_counter() - t0,
        }
    if not ctx.is_main:  # rank 0 alone evaluates and writes
        return None
    metrics: dict = {
        "source": source.name,
        "target": target.name,
        "n_train_source": int(source.x_train.shape[0]),
        "n_train_target": int(target.x_train.shape[0]),
        "n_test_source": int(source.x_test.shape[0]),
        "n_test_target": int(target.x_test.shape[0]),
        "target_accuracy": accuracy(models["dann"], target.x_test, target.y_test),
        "source_accuracy": accuracy(models["dann"], source.x_test, source.y_test),
        "source_only_target_accuracy": accuracy(
            models["source_only"], target.x_test, target.y_test
        ),
        "source_only_source_accuracy": accuracy(
            models["source_only"], source.x_test, source.y_test
        ),
    }
    if train_on_target:
        metrics["train_on_target_accuracy"] = accuracy(
            models["target_only"], target.x_test, target.y_test
        )
    n_points = min(pad_points, source.x_test.shape[0], target.x_test.shape[0])
    metrics.update(
        adaptation_report(
            models["source_only"],
            models["dann"],
            source,
            target,
            n_points=n_points,
            seed=config.seed,
            tsne_path=out / "tsne.png" if tsne else None,
        )
    )
    metrics.update(
        {
            "seconds": seconds,
            "device": str(ctx.device),
            "processes": ctx.world_size,
            "seed": config.seed,
            "config": {
                k: v
                for k, v in asdict(config).items()
                if k not in ("checkpoint", "progress", "mode")
            },
            "history": history,
        }
    )
    plot_history(history, out / "loss_curves.png")
    write_json(out / "metrics.json", metrics)
    return metrics


def load_domains(
    source: str,
    target: str,
    *,
    data_root: str | os.PathLike | None = None,
    bsds_root: str | os.PathLike | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
) -> tuple[DomainData, DomainData]:
    """Read the ``source`` and ``target`` domains (:func:`ppl_gen.data.domains.load_domain`:
    ``mnist``, ``mnistm`` or a ``.npz`` file) and give them the same channels
    (:func:`ppl_gen.data.domains.match_channels`): ``(N, C, 28, 28)`` images in [0, 1].

    Raises:
        PplGenError: naming ``source`` / ``target`` (unknown name, bad file, mismatched
            channels or sizes), ``data_root`` or ``bsds_root`` (missing files).
    """
    common = {
        "data_root": data_root,
        "bsds_root": bsds_root,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
    }
    src = load_domain(source, flag="source", **common)
    tgt = load_domain(target, flag="target", **common)
    return match_channels(src, tgt)


def run_dann_job(
    source: str,
    target: str,
    config: DANNConfig,
    *,
    out: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    bsds_root: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    train_on_target: bool = False,
    resume: bool = False,
    pad_points: int = 2000,
    tsne: bool = True,
    dist: DistributedContext | None = None,
) -> dict | None:
    """``ppl-gen train dann``: check everything before any work (settings, ``pad_points``,
    the ``out`` folder, both domains), then :func:`run_dann_experiment` in ``out``.

    Args:
        source, target: domain names (``mnist``, ``mnistm`` or ``.npz`` paths).
        config: training settings (validated here); ``config.seed`` also seeds MNIST-M.
        out: output folder (nothing is created there when a check fails).
        data_root, bsds_root, n_train, n_test: as in :func:`load_domains`.
        train_on_target, resume, pad_points, tsne, dist: as in :func:`run_dann_experiment`.

    Returns:
        The metrics of :func:`run_dann_experiment` (on every rank).

    Raises:
        PplGenError: naming the parameter of the first bad input; see also
            :func:`run_dann_experiment`.
    """
    config = config.validate()
    _check_pad_points(pad_points)
    out_dir = check_output_dir(out, "out")
    src, tgt = load_domains(
        source,
        target,
        data_root=data_root,
        bsds_root=bsds_root,
        seed=config.seed,
        n_train=n_train,
        n_test=n_test,
    )
    spec = {
        "source": source,
        "target": target,
        "data_root": None if data_root is None else str(data_root),
        "bsds_root": None if bsds_root is None else str(bsds_root),
        "seed": config.seed,
        "n_test": n_test,
    }
    return run_dann_experiment(
        src,
        tgt,
        config,
        out_dir=out_dir,
        train_on_target=train_on_target,
        resume=resume,
        pad_points=pad_points,
        tsne=tsne,
        spec=spec,
        dist=dist,
    )


def evaluate_dann_checkpoint(
    state: dict,
    *,
    device: str = "auto",
    data_root: str | os.PathLike | None = None,
    bsds_root: str | os.PathLike | None = None,
    n_test: int | None = None,
) -> dict:
    """Target and source test accuracy (fractions) of a DANN or baseline checkpoint written
    by :func:`run_dann_experiment`, on the domains its ``spec`` records (``data_root`` /
    ``bsds_root`` / ``n_test`` override the recorded ones).

    Returns:
        ``run``, ``mode``, ``epoch``, ``source``, ``target``, ``n_test_target``,
        ``target_accuracy``, ``source_accuracy``.

    Raises:
        PplGenError: naming ``CHECKPOINT`` if it is not a DANN checkpoint or records no
            domains; data errors as in :func:`load_domains`.
    """
    spec = state.get("spec") or {}
    if "source" not in spec or "target" not in spec:
        raise PplGenError("CHECKPOINT: the DANN checkpoint does not record its domains")
    model = model_from_checkpoint(state, device)
    src, tgt = load_domains(
        spec["source"],
        spec["target"],
        data_root=data_root if data_root is not None else spec.get("data_root"),
        bsds_root=bsds_root if bsds_root is not None else spec.get("bsds_root"),
        seed=spec.get("seed", 0),
        n_train=1,
        n_test=n_test if n_test is not None else spec.get("n_test"),
    )
    return {
        "run": spec.get("run"),
        "mode": state.get("config", {}).get("mode"),
        "epoch": state.get("epoch"),
        "source": src.name,
        "target": tgt.name,
        "n_test_target": int(tgt.x_test.shape[0]),
        "target_accuracy": accuracy(model, tgt.x_test, tgt.y_test),
        "source_accuracy": accuracy(model, src.x_test, src.y_test),
    }
