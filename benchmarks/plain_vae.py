"""Plain-PyTorch VAE: the yardstick the ppl_gen benchmarks compare against (no Pyro).

MLP VAE ``784-400-20`` with ReLU, Bernoulli decoder (logits), diagonal Gaussian encoder
whose scale is ``min_scale + softplus(raw)`` exactly like
:class:`ppl_gen.guides.AmortisedGaussianGuide`, analytic KL to ``N(0, I)``, Adam.  (The
``ppl_gen.models`` and ``ppl_gen.guides`` packages live in the repository's ``models/``
and ``guides/`` folders.)

The module layout mirrors ppl_gen's so that the weights load straight into
``ppl_gen.models.VAE(784, 20, (400,))`` (``decoder.*``) and
``ppl_gen.guides.AmortisedGaussianGuide(model, (400,))`` (``body.*``, ``heads.z.*``), and
both are evaluated with the same code (:func:`ppl_gen.infer.bounds.evaluate_bounds`).

The training loop does what :func:`ppl_gen.infer.training.train` does with
``elbo="analytic-kl"``: same minibatch order (CPU generator seeded ``seed``), same dynamic
binarisation stream (generator seeded ``seed + 1``), loss = ``-(N / batch) * sum_i ELBO_i``
(the scaling Pyro's subsampled plate applies), ``zero_grad(set_to_none=True)``, backward,
Adam step.

Run it directly for a quick self-check (trains briefly, evaluates with ppl_gen's bounds):
``.venv/bin/python benchmarks/plain_vae.py --quick``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.data.datasets import binarize_batch, iterate_minibatches

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data" / "mnist"
RESULTS = REPO / "benchmarks" / "results"


class PlainEncoder(nn.Module):
    """``x -> (loc, scale)``; layout identical to ``AmortisedGaussianGuide``."""

    def __init__(
        self, data_dim: int = 784, hidden: int = 400, latent_dim: int = 20, min_scale: float = 1e-4
    ) -> None:
        super().__init__()
        self.min_scale = min_scale
        self.body = nn.Sequential(nn.Sequential(nn.Linear(data_dim, hidden)), nn.ReLU())
        self.heads = nn.ModuleDict({"z": nn.Linear(hidden, 2 * latent_dim)})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.heads["z"](self.body(x)).chunk(2, dim=-1)
        return loc, self.min_scale + F.softplus(raw)


class PlainVAE(nn.Module):
    """Encoder + decoder; ``decoder`` has the layout of ``ppl_gen.models.VAE.decoder``."""

    def __init__(self, data_dim: int = 784, hidden: int = 400, latent_dim: int = 20) -> None:
        super().__init__()
        self.encoder = PlainEncoder(data_dim, hidden, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, data_dim)
        )

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Per-datapoint single-sample ELBO with analytic KL, ``(batch,)`` nats."""
        loc, scale = self.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0).sum(-1) - scale.log().sum(-1)
        return log_lik - kl


def ppl_gen_modules(data_dim: int = 784, hidden: int = 400, latent_dim: int = 20):
    """Fresh ppl_gen ``VAE`` and ``AmortisedGaussianGuide`` of the yardstick's shape."""
    from ppl_gen.guides import AmortisedGaussianGuide
    from ppl_gen.models import VAE

    model = VAE(data_dim, latent_dim, (hidden,))
    guide = AmortisedGaussianGuide(model, (hidden,))
    return model, guide


def copy_into_ppl_gen(plain: PlainVAE, model: nn.Module, guide: nn.Module) -> None:
    """Load the plain weights into a ppl_gen VAE + amortised guide (strict key match)."""
    state = plain.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("decoder.")}, strict=True)
    guide.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")},
        strict=True,
    )


def copy_from_ppl_gen(plain: PlainVAE, model: nn.Module, guide: nn.Module) -> None:
    """Initialise the plain VAE with a ppl_gen model + guide's weights (same init)."""
    state = {f"encoder.{k}": v for k, v in guide.state_dict().items()}
    state.update(model.state_dict())
    plain.load_state_dict(state, strict=True)


@dataclass
class PlainResult:
    history: dict
    iterations: int
    seconds: float


def train_plain(
    plain: PlainVAE,
    x_train: torch.Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    dynamic: bool = True,
    progress: bool = False,
) -> PlainResult:
    """Train like ``ppl_gen.infer.training.train(..., TrainConfig(elbo="analytic-kl"))``,
    on the device ``plain`` lives on (the data are moved there; the minibatch order is drawn
    on CPU and the binarisation stream lives on that device, as in ``train``).

    ``seconds`` is the wall time of the epoch loops only (as ``TrainResult.seconds``); the
    per-step ``float(loss)`` synchronises a CUDA device, as ppl_gen's loop does.
    """
    device = next(plain.parameters()).device
    x_train = x_train.to(device)
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    binarize = torch.Generator(device=device).manual_seed(seed + 1)
    n = x_train.shape[0]
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr)
    history = {"epoch": [], "train_elbo": [], "seconds": []}
    seconds, iterations = 0.0, 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        total = 0.0
        for idx in iterate_minibatches(n, batch_size, generator=shuffle, device=device):
            xb = x_train[idx]
            if dynamic:
                xb = binarize_batch(xb, binarize)
            loss = -plain.elbo(xb).sum() * (n / idx.shape[0])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iterations += 1
            total += float(loss.detach()) * idx.shape[0] / n
        seconds += time.perf_counter() - t0
        history["epoch"].append(epoch + 1)
        history["train_elbo"].append(-total / n)
        history["seconds"].append(seconds)
        if progress:
            print(f"  plain epoch {epoch + 1}: train ELBO {-total / n:.3f}", flush=True)
    return PlainResult(history=history, iterations=iterations, seconds=seconds)


@torch.no_grad()
def plain_iwae(
    plain: PlainVAE, x: torch.Tensor, k: int, max_samples_per_chunk: int = 50_000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-written IWAE-K and ELBO per datapoint, ``(N,)`` each (nats): the timing reference
    for :func:`ppl_gen.infer.bounds.evaluate_bounds` (same chunking rule: ``max_samples_per_chunk //
    K`` rows at a time, all K samples at once when they fit, running log-sum-exp).  Runs on
    ``x``'s device (the plain VAE must live there)."""
    n, device = x.shape[0], x.device
    rows = max(1, min(n, max_samples_per_chunk // min(k, max_samples_per_chunk)))
    k_chunk = max(1, min(k, max_samples_per_chunk // rows))
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    iwae, elbo = [], []
    for start in range(0, n, rows):
        xb = x[start : start + rows]
        loc, scale = plain.encoder(xb)
        lse = torch.full((xb.shape[0],), -math.inf, device=device)
        total = torch.zeros(xb.shape[0], dtype=torch.float64, device=device)
        for k_start in range(0, k, k_chunk):
            kk = min(k_chunk, k - k_start)
            eps = torch.randn(kk, *loc.shape, device=device)
            z = loc + scale * eps
            logits = plain.decoder(z)
            log_lik = torch.einsum("kbd,bd->kb", logits, xb) - F.softplus(logits).sum(-1)
            log_prior = -0.5 * z.pow(2).sum(-1) - z.shape[-1] * half_log_2pi
            log_q = -0.5 * eps.pow(2).sum(-1) - scale.log().sum(-1) - z.shape[-1] * half_log_2pi
            lw = log_lik + log_prior - log_q
            lse = torch.logaddexp(lse, torch.logsumexp(lw, dim=0))
            total += lw.sum(0, dtype=torch.float64)
        iwae.append(lse - math.log(k))
        elbo.append((total / k).float())
    return torch.cat(iwae), torch.cat(elbo)


# ------------------------------------------------------------------ helpers for scripts


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="folder containing MNIST/raw/*-ubyte (default: ../shared/data/mnist "
        "relative to the repository root)",
    )


def load_mnist(root: Path, *, required: bool = True):
    """``load_dataset("mnist", root, binarize="dynamic")``, or exit with a clear message."""
    from ppl_gen.data.datasets import load_dataset

    if not (Path(root) / "MNIST" / "raw").is_dir():
        if not required:
            return None
        sys.exit(
            f"MNIST not found under --data-root {root} (expected MNIST/raw/*-ubyte in "
            "torchvision layout); pass --data-root"
        )
    return load_dataset("mnist", root, binarize="dynamic")


def write_json(path: Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Paths inside the results are written relative to the repository (the folder beside
    # it as ``../``), so results files do not record where this checkout happens to live.
    text = json.dumps(payload, indent=1).replace(str(REPO) + "/", "")
    path.write_text(text.replace(str(REPO.parent) + "/", "../") + "\n")
    print(f"wrote {_display(path)}")


def _display(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _git_state() -> str | None:
    """``<commit>`` plus ``+dirty`` when the tracked working tree differs from it (the
    benchmarks run the working tree)."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def environment() -> dict:
    import os
    import platform

    import pyro

    return {
        "git": _git_state(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="5,000 train rows, 1 epoch")
    args = parser.parse_args()
    from ppl_gen.infer.bounds import evaluate_bounds

    data = load_mnist(args.data_root)
    x = data.train[:5000] if args.quick else data.train
    torch.manual_seed(0)
    model, guide = ppl_gen_modules()
    plain = PlainVAE()
    copy_from_ppl_gen(plain, model, guide)
    res = train_plain(plain, x, epochs=args.epochs, progress=True)
    copy_into_ppl_gen(plain, model, guide)
    b = evaluate_bounds(model, guide, data.test[: args.n_test], k=args.k)
    print(
        f"plain VAE: {res.iterations} steps in {res.seconds:.2f} s "
        f"({res.iterations * 128 / res.seconds:.0f} images/s); test ELBO {b.elbo_mean:.2f}, "
        f"IWAE-{args.k} {b.iwae_mean:.2f} nats on {b.elbo.numel()} images"
    )


if __name__ == "__main__":
    main()
