"""Training DANN by SGD as in Ganin et al. (JMLR 2016, sec. 5.2.2), and its baselines.

One step takes ``batch_size / 2`` labelled source images and ``batch_size / 2`` unlabelled
target images, passes them through G_f (one forward pass per domain by default, so batch
norm uses per-domain batch statistics; ``separate_batches=False`` for one joint pass), and
minimises

    loss = CE(G_y(G_f(x_s)), y_s) + BCE(G_d(R_λ(G_f([x_s; x_t]))), [0; 1])

(eq. 9-10 with the reversal layer, eq. 13-15) with SGD, momentum 0.9, and the paper's
schedules driven by training progress ``p ∈ [0, 1]`` (steps done / total steps):

* learning rate ``μ_p = μ_0 / (1 + α p)^β``, ``μ_0 = 0.01``, ``α = 10``, ``β = 0.75``
  (a :class:`torch.optim.lr_scheduler.LambdaLR` stepped every batch);
* adaptation factor ``λ_p = 2 / (1 + exp(-γ p)) - 1``, ``γ = 10``
  (:func:`ppl_gen.adaptation.gradient_reversal.dann_lambda`).

``mode="source-only"`` is the paper's lower bound: the same network and schedule trained
on labelled source batches only (the target is never seen, not even by batch norm); the
train-on-target upper bound is ``mode="source-only"`` with the target as the source.

The loop is a few small functions (:func:`batch_indices`, :func:`dann_step`) over plain
``torch.optim``.  A checkpoint is written atomically after every epoch; ``resume=True``
restores the model, optimiser, scheduler, epoch, step, history and random-number states, so
a resumed run equals an uninterrupted one.

**Data parallelism** (``torchrun --nproc-per-node N -m ppl_gen train dann ...``, see
:mod:`ppl_gen.core.distributed`): every rank draws the same batch permutations (one shared
generator), and from each global step of ``batch_size / 2`` source and ``batch_size / 2``
target indices takes its part ``idx[rank::N]`` (``DistributedSampler``'s rule), so the
global batch is the configured one.  The network runs inside ``DistributedDataParallel``;
its batch-norm layers are converted by :func:`ppl_gen.core.distributed.sync_batchnorm`, so each
forward pass normalises with the statistics of the global batch *of that pass* -- with
``separate_batches`` the source pass and the target pass still get per-domain statistics,
exactly as in one process.  Each rank's loss is its share of the global sums, ``N (sum_r
CE / B_s + sum_r BCE / (B_s + B_t))``, so DDP's gradient average is the gradient of the
single-process loss even when the shards differ in size.  The step's losses and domain
accuracy are summed over the ranks (every rank sees the same values, and stops together
on a non-finite loss).  Dropout masks differ per rank (torch seed ``seed + 1 + rank``).
Only rank 0 shows progress, writes checkpoints (with every rank's random state) and
figures; a crashed rank makes the others stop with
:class:`~ppl_gen.core.distributed.RankFailed`, and the last good checkpoint stays intact.

``precision="bf16"`` runs the training forward passes under :func:`ppl_gen.core.precision.autocast`
(accuracies and features for the analysis are computed in float32);
``deterministic=True`` runs training under :func:`ppl_gen.core.precision.deterministic`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ppl_gen.adaptation.dann import ARCHS, DANN, ArchConfig, arch_config
from ppl_gen.core import precision as amp
from ppl_gen.core.checkpoint import save_checkpoint
from ppl_gen.core.device import resolve_device, to_device
from ppl_gen.core.distributed import (
    DistributedContext,
    RankFailed,
    init_from_env,
    load_for_resume,
    sync_batchnorm,
)
from ppl_gen.core.errors import PplGenError, require_positive_int

MODES = ("dann", "source-only")


@dataclass
class DomainData:
    """One domain's images: ``x_*`` ``(N, C, H, W)`` float32 in [0, 1], ``y_*`` ``(N,)``
    int64 labels (``y_train`` may be ``None`` for an unlabelled target)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None

    @property
    def channels(self) -> int:
        """Image channels C."""
        return int(self.x_train.shape[1])


@dataclass
class DANNConfig:
    """Settings of :func:`train_dann` (defaults: Ganin et al. 2016, sec. 5.2.2).

    Attributes:
        arch: ``"paper"`` or ``"bn"`` (see :mod:`ppl_gen.adaptation.dann`).
        mode: ``"dann"`` (domain-adversarial) or ``"source-only"``.
        epochs: passes over the source training images.
        batch_size: images per SGD step, half source and half target (even, >= 2).
        lr: μ_0, the initial learning rate.
        alpha, beta: the learning-rate annealing ``μ_0 / (1 + α p)^β``.
        gamma: γ of the λ schedule.
        lambda_: a fixed λ instead of the schedule (``None``: scheduled).
        momentum: SGD momentum.
        separate_batches: pass the source and the target half of a step through G_f
            separately, so batch norm normalises each domain with its own batch statistics
            during training (``False``: one joint forward pass).  Without batch norm
            (``"paper"``) both give the same gradients.
        weight_decay: L2 penalty of SGD.
        seed: seeds initialisation, batch order and dropout.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: file written after every epoch (``None``: no checkpoints).
        progress: show a tqdm bar and per-epoch log lines.
        precision: ``fp32`` or ``bf16`` (training forward passes under ``torch.autocast``).
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training.
    """

    arch: str = "paper"
    mode: str = "dann"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    alpha: float = 10.0
    beta: float = 0.75
    gamma: float = 10.0
    lambda_: float | None = None
    momentum: float = 0.9
    separate_batches: bool = True
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    checkpoint: str | None = None
    progress: bool = True
    precision: str = "fp32"
    deterministic: bool = False

    def validate(self) -> DANNConfig:
        """Check every field; returns ``self``.

        Raises:
            PplGenError: naming the CLI flag of the bad field.
        """
        if self.arch not in ARCHS:
            raise PplGenError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.mode not in MODES:
            raise PplGenError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        require_positive_int("epochs", self.epochs)
        require_positive_int("batch_size", self.batch_size)
        if self.batch_size < 2 or self.batch_size % 2:
            raise PplGenError(
                "batch_size must be even and >= 2 (half source, half target), "
                f"got {self.batch_size}"
            )
        for flag, value in (("lr", self.lr), ("gamma", self.gamma)):
            if not (math.isfinite(value) and value > 0):
                raise PplGenError(f"{flag} must be a positive number, got {value!r}")
        for flag, value in (
            ("alpha", self.alpha),
            ("beta", self.beta),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise PplGenError(f"{flag} must be a non-negative number, got {value!r}")
        if self.lambda_ is not None and not (math.isfinite(self.lambda_) and self.lambda_ >= 0):
            raise PplGenError(f"lambda must be a non-negative number, got {self.lambda_!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise PplGenError(f"seed must be a non-negative integer, got {self.seed!r}")
        amp.check_precision(self.precision)
        resolve_device(self.device)
        return self


@dataclass
class DANNResult:
    """What :func:`train_dann` returns.

    Attributes:
        model: the trained :class:`DANN` (in eval mode, on the training device).
        history: per epoch: ``epoch``, ``label_loss`` (nats per source image),
            ``domain_loss`` (nats per image, ``None`` in source-only mode),
            ``domain_accuracy`` (fraction of the step's images whose domain G_d got right,
            ``None`` in source-only mode), ``lambda`` and ``lr`` at the epoch's end,
            ``seconds`` (cumulative training wall time).
        seconds: training wall time in seconds (resumed runs: all sessions).
        steps: SGD steps taken.
    """

    model: DANN
    history: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0


DOMAINS = ("mnist", "mnistm")


def load_domain(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    bsds_root: str | os.PathLike | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    flag: str = "source",
    cache_dir: str | os.PathLike | None = None,
) -> DomainData:
    """Read one domain as ``(N, C, 28, 28)`` float32 images in [0, 1] with labels.

    Args:
        name: ``"mnist"`` (1 channel; torchvision MNIST in ``data_root``), ``"mnistm"``
            (3 channels; :func:`ppl_gen.data.mnistm.load_mnistm` from ``data_root`` and
            ``bsds_root``) or a ``.npz`` file with ``x_train``, ``y_train``, ``x_test``,
            ``y_test`` (``x``: ``(N, H, W)`` or ``(N, C, H, W)``, values in [0, 1]).
        data_root: MNIST folder (default :func:`ppl_gen.data.datasets.default_data_root`).
        bsds_root: photographs for MNIST-M (default ``../shared/data/bsds500/train``).
        seed: MNIST-M seed.
        n_train, n_test: keep only the first N training / test images.
        flag: the CLI flag named in error messages (``--source`` / ``--target``).
        cache_dir: MNIST-M cache folder.

    Raises:
        PplGenError: unknown name, missing or malformed files (naming ``flag``,
            ``--data-root`` or ``--bsds-root``), values outside [0, 1].
    """
    from ppl_gen.data.datasets import default_data_root
    from ppl_gen.data.mnistm import _read_mnist, load_mnistm

    for f, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None:
            require_positive_int(f, v)
    key = str(name).strip()
    if key.lower() == "mnist":
        root = data_root if data_root is not None else default_data_root()
        if root is None:
            raise PplGenError("data_root is required for mnist: a folder containing MNIST/raw")
        (xtr, ytr), (xte, yte) = _read_mnist(root, True), _read_mnist(root, False)
        x_train, x_test = xtr[:, None].float() / 255.0, xte[:, None].float() / 255.0
    elif key.lower() == "mnistm":
        x_train, ytr = load_mnistm(
            data_root, bsds_root, split="train", seed=seed, cache_dir=cache_dir
        )
        x_test, yte = load_mnistm(
            data_root, bsds_root, split="test", seed=seed, cache_dir=cache_dir
        )
    elif key.lower().endswith(".npz"):
        x_train, ytr, x_test, yte = _read_npz(Path(key), flag)
    else:
        raise PplGenError(f"{flag} must be mnist, mnistm or a .npz file, got {name!r}")
    return DomainData(
        key.lower() if key.lower() in DOMAINS else Path(key).name,
        x_train[:n_train],
        ytr[:n_train],
        x_test[:n_test],
        yte[:n_test],
    )


def _read_npz(path: Path, flag: str) -> tuple[torch.Tensor, ...]:
    import numpy as np

    if not path.is_file():
        raise PplGenError(f"{flag} {str(path)!r}: no such file")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise PplGenError(f"{flag} {str(path)!r} lacks the array {exc}") from None
    except Exception as exc:
        raise PplGenError(
            f"{flag} {str(path)!r}: cannot read as .npz ({type(exc).__name__})"
        ) from None
    out = []
    for split in ("train", "test"):
        x = torch.as_tensor(arrays[f"x_{split}"], dtype=torch.float32)
        y = torch.as_tensor(arrays[f"y_{split}"]).to(torch.int64)
        if x.dim() == 3:
            x = x[:, None]
        if x.dim() != 4 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise PplGenError(
                f"{flag} {str(path)!r}: x_{split} must be (N, H, W) or (N, C, H, W) with "
                f"y_{split} (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
            raise PplGenError(f"{flag} {str(path)!r}: x_{split} values must be finite, in [0, 1]")
        out += [x, y]
    return tuple(out)


def match_channels(source: DomainData, target: DomainData) -> tuple[DomainData, DomainData]:
    """Give both domains the same number of channels: greyscale (1 channel) images are
    replicated to 3 channels when the other domain is RGB (MNIST → MNIST-M, as in the
    paper); other mismatches are refused.

    Raises:
        PplGenError: channel counts that differ and are not 1 vs 3 (``--source`` /
            ``--target``), or images of different sizes.
    """
    cs, ct = source.channels, target.channels
    if source.x_train.shape[2:] != target.x_train.shape[2:]:
        raise PplGenError(
            f"source {source.name} images are {tuple(source.x_train.shape[2:])} but target "
            f"{target.name} images are {tuple(target.x_train.shape[2:])}: sizes must match"
        )
    if cs == ct:
        return source, target
    if {cs, ct} != {1, 3}:
        raise PplGenError(
            f"source {source.name} has {cs} channels but target {target.name} has {ct}: "
            "only equal counts or greyscale (1) vs RGB (3) are accepted"
        )

    def rgb(d: DomainData) -> DomainData:
        if d.channels == 3:
            return d
        return DomainData(
            d.name,
            d.x_train.expand(-1, 3, -1, -1).contiguous(),
            d.y_train,
            d.x_test.expand(-1, 3, -1, -1).contiguous(),
            d.y_test,
        )

    return rgb(source), rgb(target)


def input_stats(*domains: DomainData) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation ``(C,)`` of the pooled training images of
    ``domains`` (the model's input standardisation)."""
    x = torch.cat([d.x_train for d in domains])
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


def batch_indices(
    n_source: int, n_target: int, half: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(source_idx, target_idx)`` pairs, ``half`` indices each.

    The source is covered once in random order (``max(1, n_source // half)`` steps, the
    incomplete last batch dropped); the target indices come from as many fresh random
    permutations as needed.  All permutations are drawn from the CPU ``generator``.
    """
    half_s = min(half, n_source)
    half_t = min(half, n_target)
    steps = max(1, n_source // half_s)
    src = torch.randperm(n_source, generator=generator)
    reps = -(-steps * half_t // n_target)
    tgt = torch.cat([torch.randperm(n_target, generator=generator) for _ in range(reps)])
    for i in range(steps):
        yield src[i * half_s : (i + 1) * half_s], tgt[i * half_t : (i + 1) * half_t]


def steps_per_epoch(n_source: int, half: int) -> int:
    """SGD steps in one epoch of :func:`batch_indices`."""
    return max(1, n_source // min(half, n_source))


def dann_step(
    model: DANN,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xt: torch.Tensor | None,
    separate: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DANN objective on one batch (Ganin et al. 2016, eq. 9-10 through R_λ).

    Args:
        model: the network (its reversal layer's λ already set), or its DDP wrapper.
        xs: ``(b_s, C, H, W)`` source images; ys: ``(b_s,)`` their labels.
        xt: ``(b_t, C, H, W)`` target images, or ``None`` for source-only training.
        separate: one forward pass per domain (per-domain batch-norm statistics) instead
            of one joint pass.

    Returns:
        ``(loss, stats)``: the scalar loss to back-propagate (nats) and the floats
        ``label_loss``, ``domain_loss``, ``domain_accuracy`` (the last two ``nan`` without
        ``xt``).
    """
    loss, label_loss, domain_loss, acc = dann_losses(model, xs, ys, xt, separate)
    return loss, {
        "label_loss": float(label_loss),
        "domain_loss": float(domain_loss),
        "domain_accuracy": float(acc),
    }


def dann_losses(
    model: DANN,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xt: torch.Tensor | None,
    separate: bool = False,
    totals: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`dann_step`'s terms as tensors, optionally as shares of a larger batch.

    Args:
        model, xs, ys, xt, separate: as in :func:`dann_step`.
        totals: ``(B_s, B)``: the global step's source images and all its images.  Given,
            the terms are this shard's sums divided by those counts (``sum CE / B_s``,
            ``sum BCE / B``, correct domain guesses ``/ B``), so summing them over the
            shards of a data-parallel step gives the means of the whole batch.  ``None``:
            the means over this batch.

    Returns:
        ``(loss, label_loss, domain_loss, domain_accuracy)``: ``loss`` (scalar, with
        gradient) is ``label_loss + domain_loss``; the other three are detached scalars
        (nats, nats, fraction; the last two ``nan`` without ``xt``).
    """
    if xt is None:
        out = model(xs, domain=False)
        if totals is None:
            label_loss = F.cross_entropy(out.class_logits, ys)
        else:
            label_loss = F.cross_entropy(out.class_logits, ys, reduction="sum") / totals[0]
        nan = label_loss.detach().new_full((), float("nan"))
        return label_loss, label_loss.detach(), nan, nan
    b = xs.shape[0]
    if separate:
        out_s, out_t = model(xs), model(xt)
        class_logits = out_s.class_logits
        domain_logits = torch.cat([out_s.domain_logits, out_t.domain_logits])
    else:
        out = model(torch.cat([xs, xt]))
        class_logits, domain_logits = out.class_logits[:b], out.domain_logits
    domain = torch.cat([xs.new_zeros(b), xt.new_ones(xt.shape[0])])
    if totals is None:
        label_loss = F.cross_entropy(class_logits, ys)
        domain_loss = F.binary_cross_entropy_with_logits(domain_logits, domain)
        with torch.no_grad():
            acc = ((domain_logits > 0).float() == domain).float().mean()
    else:
        label_loss = F.cross_entropy(class_logits, ys, reduction="sum") / totals[0]
        domain_loss = (
            F.binary_cross_entropy_with_logits(domain_logits, domain, reduction="sum") / totals[1]
        )
        with torch.no_grad():
            acc = ((domain_logits > 0).float() == domain).float().sum() / totals[1]
    return label_loss + domain_loss, label_loss.detach(), domain_loss.detach(), acc


def make_optimizer(
    model: DANN, config: DANNConfig, total_steps: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD with momentum and the annealing ``μ_p = μ_0 / (1 + α p)^β``, ``p = step /
    total_steps`` (Ganin et al. 2016, sec. 5.2.2)."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    alpha, beta = config.alpha, config.beta

    def factor(step: int) -> float:
        return 1.0 / (1.0 + alpha * min(step / total_steps, 1.0)) ** beta

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(model: DANN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes ``(N,)`` int64 of images ``x`` ``(N, C, H, W)`` (eval mode)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    preds = [
        model.classify(x[i : i + batch_size].to(device)).argmax(1).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    model.train(was)
    return torch.cat(preds)


def accuracy(model: DANN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` ``(N, C, H, W)`` classified as ``y`` ``(N,)``."""
    return float((predict(model, x, batch_size) == y.cpu()).float().mean())


@torch.no_grad()
def extract_features(model: DANN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """G_f features ``(N, feature_dim)`` (CPU, float32) of images ``x`` ``(N, C, H, W)``."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    feats = [
        model.features(x[i : i + batch_size].to(device)).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    model.train(was)
    return torch.cat(feats)


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "batches": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    state = to_device(state, "cpu")
    torch.set_rng_state(state["torch"])
    generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def train_dann(
    source: DomainData,
    target: DomainData,
    config: DANNConfig | None = None,
    *,
    arch: ArchConfig | None = None,
    resume: bool = False,
    spec: dict | None = None,
    dist: DistributedContext | None = None,
) -> DANNResult:
    """Train DANN (or the source-only baseline) on labelled ``source`` and unlabelled
    ``target`` training images (data-parallel under torchrun: module docs).

    Args:
        source: labelled source domain (``y_train`` required).
        target: target domain (labels unused); channel counts must already match
            (:func:`match_channels`).
        config: settings (default :class:`DANNConfig`).
        arch: a custom network instead of ``config.arch``.
        resume: continue from ``config.checkpoint`` if that file exists.
        spec: JSON-able description stored in the checkpoint (data sources, for
            ``ppl-gen evaluate``).
        dist: the data-parallel context; default :func:`ppl_gen.core.distributed.init_from_env`
            (the torchrun job this process belongs to, else one process).  Every rank
            passes the whole of both domains.

    Returns:
        :class:`DANNResult` with the trained model (a plain :class:`DANN`, identical on
        every rank; losses are those of the global batches).

    Raises:
        PplGenError: bad configuration, unlabelled source, mismatched channels or image
            sizes, an unreadable or incompatible checkpoint, a global half-batch smaller
            than the number of processes.
        TrainingDiverged: a non-finite loss (the last checkpoint is kept).
        RankFailed: another rank stopped (crashed); the last checkpoint is left as it was.
    """
    config = (config or DANNConfig()).validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    with amp.deterministic(config.deterministic, ctx.device):
        try:
            return _train_dann(source, target, config, ctx, arch=arch, resume=resume, spec=spec)
        except RankFailed as exc:
            kept = f"; the last good checkpoint {config.checkpoint} is intact" * bool(
                config.checkpoint
            )
            raise RankFailed(f"{exc}{kept}") from exc


def _train_dann(
    source: DomainData,
    target: DomainData,
    config: DANNConfig,
    ctx: DistributedContext,
    *,
    arch: ArchConfig | None,
    resume: bool,
    spec: dict | None,
) -> DANNResult:
    from ppl_gen.infer.training import TrainingDiverged

    if source.y_train is None:
        raise PplGenError(f"source {source.name} has no labels: DANN needs a labelled source")
    if source.x_train.shape[1:] != target.x_train.shape[1:]:
        raise PplGenError(
            f"source {source.name} images {tuple(source.x_train.shape[1:])} and target "
            f"{target.name} images {tuple(target.x_train.shape[1:])} differ "
            "(see match_channels)"
        )
    device = ctx.device
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net_config = arch_config(arch if arch is not None else config.arch, source.channels)
    adversarial = config.mode == "dann"
    model = DANN(net_config, lambda_=config.lambda_, gamma=config.gamma)
    model.set_input_stats(*(input_stats(source, target) if adversarial else input_stats(source)))
    model.to(device)
    half = config.batch_size // 2
    n_s, n_t = source.x_train.shape[0], target.x_train.shape[0]
    if ctx.distributed and min(half, n_s, n_t) < ctx.world_size:
        raise PplGenError(
            f"batch_size {config.batch_size}: each step's {min(half, n_s, n_t)} source / "
            f"target images cannot be split over {ctx.world_size} processes (every process "
            "needs at least one image of each domain)"
        )
    if ctx.distributed:
        sync_batchnorm(model, ctx)  # global-batch statistics, per forward pass
        torch.manual_seed(config.seed + 1 + ctx.rank)  # per-rank dropout masks
    per_epoch = steps_per_epoch(n_s, half)
    total = per_epoch * config.epochs
    optimizer, scheduler = make_optimizer(model, config, total)
    keys = ("epoch", "label_loss", "domain_loss", "domain_accuracy", "lambda", "lr", "seconds")
    result = DANNResult(model=model, history={k: [] for k in keys})
    start_epoch = 0
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    state = load_for_resume(ckpt, ctx) if resume and ckpt is not None else None
    if state is not None:
        if state.get("kind") != "dann" or state.get("arch") != asdict(net_config):
            raise PplGenError(
                f"resume: {str(ckpt)!r} is not a checkpoint of this DANN network "
                "(start afresh without resume or use another out)"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        result.history, result.seconds, result.steps = (
            state["history"],
            state["seconds"],
            state["steps"],
        )
        start_epoch = state["epoch"]
        _set_rng_state(state["rng"], generator)
        if ctx.distributed:
            ctx.set_rng_state(state.get("rng_ranks"), config.seed + 1 + 7919 * start_epoch)
    # Host tensors are copied once, through pinned memory on CUDA.
    xs_all, ys_all = ctx.to_device(source.x_train), ctx.to_device(source.y_train)
    xt_all = ctx.to_device(target.x_train)
    # Source-only never uses G_d; the batch-norm buffers agree on every rank by construction.
    net = ctx.wrap(model, find_unused_parameters=not adversarial, forward_sync_buffers=False)
    model.train()
    show = config.progress and ctx.is_main
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        stats: dict[str, list[float]] = {"label_loss": [], "domain_loss": [], "domain_accuracy": []}
        bar = tqdm(
            batch_indices(n_s, n_t, half, generator),
            total=per_epoch,
            desc=f"{config.mode} epoch {epoch + 1}/{config.epochs}",
            disable=True if not show else None,
            leave=False,
        )
        lam = model.grl.lambda_
        for i, (si, ti) in enumerate(bar):
            lam = model.set_progress(min(result.steps / total, 1.0)) if adversarial else 0.0
            if ctx.distributed:
                step_stats = _distributed_step(
                    net, optimizer, xs_all, ys_all, xt_all if adversarial else None,
                    si.to(device), ti.to(device), config, ctx,
                )  # fmt: skip
                bad = not math.isfinite(step_stats["label_loss"]) or (
                    adversarial and not math.isfinite(step_stats["domain_loss"])
                )
            else:
                si, ti = si.to(device), ti.to(device)
                with amp.autocast(config.precision, device):
                    loss, step_stats = dann_step(
                        model,
                        xs_all[si],
                        ys_all[si],
                        xt_all[ti] if adversarial else None,
                        separate=config.separate_batches,
                    )
                bad = not torch.isfinite(loss)
            if bad:
                where = f" (last good checkpoint kept at {ckpt})" if ckpt else ""
                raise TrainingDiverged(
                    f"non-finite loss at epoch {epoch + 1}, batch {i + 1}{where}"
                )
            if not ctx.distributed:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            scheduler.step()
            result.steps += 1
            for k, v in step_stats.items():
                stats[k].append(v)
            bar.set_postfix(label=f"{step_stats['label_loss']:.3f}", refresh=False)
        result.seconds += time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "label_loss": _mean(stats["label_loss"]),
            "domain_loss": _mean(stats["domain_loss"]),
            "domain_accuracy": _mean(stats["domain_accuracy"]),
            "lambda": lam,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": result.seconds,
        }
        for k in keys:
            result.history[k].append(row[k])
        if show:
            line = f"{config.mode} epoch {epoch + 1}: label loss {row['label_loss']:.4f}"
            if adversarial:
                line += (
                    f", domain loss {row['domain_loss']:.4f}, domain accuracy "
                    f"{row['domain_accuracy']:.3f}, lambda {lam:.3f}"
                )
            tqdm.write(line + f", lr {row['lr']:.5f}, {result.seconds:.0f} s")
        if ckpt is not None:
            state = {
                "kind": "dann",
                "spec": spec,
                "config": asdict(config),
                "arch": asdict(net_config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "steps": result.steps,
                "seconds": result.seconds,
                "history": result.history,
                "rng": _rng_state(generator),
            }
            if ctx.distributed:
                state["rng_ranks"] = ctx.rng_states()
                state["world_size"] = ctx.world_size
            if ctx.is_main:
                save_checkpoint(ckpt, state)
    model.eval()
    if ctx.distributed:  # hand back a plain network (no process-group batch norm)
        plain = DANN(net_config, lambda_=config.lambda_, gamma=config.gamma)
        plain.load_state_dict(model.state_dict())
        plain.grl.lambda_ = model.grl.lambda_
        result.model = plain.to(device).eval()
    return result


def _distributed_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    xs_all: torch.Tensor,
    ys_all: torch.Tensor,
    xt_all: torch.Tensor | None,
    si: torch.Tensor,
    ti: torch.Tensor,
    config: DANNConfig,
    ctx: DistributedContext,
) -> dict[str, float]:
    """This rank's shard of the global step ``(si, ti)``: forward (DDP), backward with the
    loss scaled so that DDP's average is the global gradient, and the global step's
    statistics (summed over ranks).  The optimiser step is left to the caller."""
    si_r, ti_r = ctx.shard(si), ctx.shard(ti)
    totals = (si.shape[0], si.shape[0] + (ti.shape[0] if xt_all is not None else 0))
    with ctx.guard("DANN training step (DDP gradient all-reduce)"):
        with amp.autocast(config.precision, ctx.device):
            loss, *terms = dann_losses(
                net,
                xs_all[si_r],
                ys_all[si_r],
                xt_all[ti_r] if xt_all is not None else None,
                config.separate_batches,
                totals,
            )
        optimizer.zero_grad(set_to_none=True)
        (loss * ctx.world_size).backward()
    sums = ctx.all_reduce_sum(torch.stack(terms).float(), "DANN loss all-reduce").tolist()
    return dict(zip(("label_loss", "domain_loss", "domain_accuracy"), sums, strict=True))


def model_from_checkpoint(state: dict, device: str | torch.device = "cpu") -> DANN:
    """Rebuild the trained :class:`DANN` from a checkpoint written by :func:`train_dann`.

    Raises:
        PplGenError: naming ``CHECKPOINT`` if it is not a DANN checkpoint.
    """
    if state.get("kind") != "dann" or "arch" not in state:
        raise PplGenError("CHECKPOINT: not a DANN checkpoint (kind 'dann')")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()}
    cfg = state.get("config", {})
    model = DANN(ArchConfig(**arch), lambda_=cfg.get("lambda_"), gamma=cfg.get("gamma", 10.0))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


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
) -> dict:
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
        The metrics dict written to ``metrics.json``: accuracies (fractions of test images)
        ``target_accuracy``, ``source_accuracy`` (DANN), ``source_only_target_accuracy``,
        ``source_only_source_accuracy``, ``train_on_target_accuracy`` (if trained),
        ``proxy_a_distance_before`` / ``_after`` (and the held-out errors), seconds, config
        and per-epoch histories.

    Raises:
        PplGenError: unlabelled test images, bad settings (see :func:`train_dann`).
    """
    from ppl_gen.adaptation.domain_analysis import adaptation_report, plot_history
    from ppl_gen.core.io import write_json

    if source.y_test is None or target.y_test is None:
        raise PplGenError("source / target need labelled test images to measure accuracy")
    out = Path(out_dir)
    runs = {"source_only": ("source-only", source), "dann": ("dann", source)}
    if train_on_target:
        if target.y_train is None:
            raise PplGenError("train_on_target needs labelled target training images")
        runs["target_only"] = ("source-only", target)
    ctx = dist if dist is not None else init_from_env(config.device)
    models, seconds, history = {}, {}, {}
    for name, (mode, train_domain) in runs.items():
        ckpt = out / ("checkpoint.pt" if name == "dann" else f"{name}.pt")
        run_config = DANNConfig(**{**asdict(config), "mode": mode, "checkpoint": str(ckpt)})
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
    if not ctx.is_main:  # rank 0 alone evaluates and writes; the others receive its metrics
        return ctx.broadcast_object(None)
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
    return ctx.broadcast_object(metrics)
