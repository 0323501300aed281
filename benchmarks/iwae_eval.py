"""IWAE-K evaluation cost: ``evaluate_bounds`` with K = 5000 on the 10,000 MNIST test images.

784-400-20 VAE (``ppl_gen.models.VAE`` + ``AmortisedGaussianGuide``), trained briefly
(``--train-epochs``, default 1) or loaded from a ppl_gen ``--checkpoint``; the bound values do
not matter here, only wall time (target <= 360 s) and peak memory (target <= 3 GB).

Every measurement runs in a fresh worker process, so that its peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own: the worker loads torch, Pyro,
the model and the test images, records the peak RSS so far (the *baseline*), runs
``evaluate_bounds`` and records the peak again; the evaluation's memory is
``peak - baseline``.  Before the main run, a short probe (``--probe-images`` images, same K)
tries a few ``max_samples_per_chunk`` values (``--probe-chunks``), interleaved over
``--probe-rounds`` rounds; the fastest median is used for the main run (or ``--chunk``).
On Linux the worker resets the kernel's peak-RSS mark just before evaluating
(``/proc/self/clear_refs``), so the baseline is the resident set at that moment rather than
a transient start-up peak; both are recorded.

``.venv/bin/python benchmarks/iwae_eval.py [--quick] [--n-test N] [--k K]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import pyro
import torch
from plain_vae import RESULTS, add_data_args, environment, load_mnist, ppl_gen_modules, write_json

GB = 1024**3


def _rss_now() -> int:
    """Current resident set size in bytes (Linux ``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0:
    ``echo 5 > /proc/self/clear_refs``; resets ``ru_maxrss`` too), so that the peak read after
    the evaluation is the evaluation's own and not a transient of start-up (imports,
    ``torch.load``).  Returns whether it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def worker(args: argparse.Namespace) -> None:
    """Evaluate once in this (fresh) process and write a JSON result."""
    from ppl_gen.bounds import evaluate_bounds

    state = torch.load(args.worker, weights_only=False)
    x = state["x"][: args.n]
    model, guide = ppl_gen_modules()
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    model.eval()
    guide.eval()
    pyro.set_rng_seed(args.seed)
    startup_peak = _peak_rss()
    reset = _reset_peak_rss()
    baseline_peak, baseline_rss = _peak_rss(), _rss_now()
    t0 = time.perf_counter()
    bounds = evaluate_bounds(model, guide, x, k=args.k, max_samples_per_chunk=args.chunk)
    seconds = time.perf_counter() - t0
    peak = _peak_rss()
    result = {
        "n": int(x.shape[0]),
        "k": args.k,
        "max_samples_per_chunk": args.chunk,
        "seconds": seconds,
        "seconds_per_image": seconds / x.shape[0],
        "startup_peak_rss_bytes": startup_peak,
        "peak_reset_before_eval": reset,
        "baseline_peak_rss_bytes": baseline_peak,
        "baseline_rss_bytes": baseline_rss,
        "peak_rss_bytes": peak,
        "eval_peak_increase_bytes": peak - baseline_peak,
        "iwae": bounds.iwae_mean,
        "iwae_se": bounds.iwae_se,
        "elbo": bounds.elbo_mean,
        "elbo_se": bounds.elbo_se,
        "threads": torch.get_num_threads(),
    }
    Path(args.result).write_text(json.dumps(result))


def run_worker(state: Path, n: int, k: int, chunk: int, seed: int, tmp: Path) -> dict:
    out = tmp / f"result-{n}-{k}-{chunk}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        str(state),
        "--result",
        str(out),
        "--n-test",
        str(n),
        "--k",
        str(k),
        "--chunk",
        str(chunk),
        "--seed",
        str(seed),
    ]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.read_text())


def prepare_state(args: argparse.Namespace, tmp: Path) -> tuple[Path, dict]:
    """Train (or load) the VAE; save its weights and the test images for the workers."""
    from ppl_gen.checkpoint import load_checkpoint
    from ppl_gen.training import TrainConfig, train

    data = load_mnist(args.data_root)
    torch.manual_seed(args.seed)
    model, guide = ppl_gen_modules()
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        model.load_state_dict(ckpt["model"])
        guide.load_state_dict(ckpt["guide"])
        source = {"checkpoint": Path(args.checkpoint).name}
    else:
        config = TrainConfig(
            epochs=args.train_epochs, seed=args.seed, val_every=0, progress=False, device="cpu"
        )
        res = train(model, guide, data, config)
        source = {
            "trained_epochs": args.train_epochs,
            "train_seconds": res.seconds,
            "train_elbo": res.history["train_elbo"][-1],
        }
        print(f"trained {args.train_epochs} epoch(s) in {res.seconds:.1f} s", flush=True)
    path = tmp / "state.pt"
    torch.save(
        {"model": model.state_dict(), "guide": guide.state_dict(), "x": data.test.clone()}, path
    )
    return path, {**source, "n_test_available": int(data.test.shape[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser)
    parser.add_argument("--k", type=int, default=5000, help="importance samples K")
    parser.add_argument("--n-test", type=int, default=None, help="test images (default all)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="ppl_gen checkpoint")
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=None, help="max_samples_per_chunk to use")
    parser.add_argument("--probe-chunks", default="50000,100000,200000")
    parser.add_argument("--probe-images", type=int, default=100)
    parser.add_argument("--probe-rounds", type=int, default=2)
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="500 test images")
    parser.add_argument("--out", type=Path, default=RESULTS / "iwae_eval.json")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        args.n = args.n_test
        worker(args)
        return
    if args.quick and args.n_test is None:
        args.n_test = 500

    with tempfile.TemporaryDirectory(prefix="iwae_eval_") as tmp_name:
        tmp = Path(tmp_name)
        state, source = prepare_state(args, tmp)
        n_test = args.n_test or source["n_test_available"]
        if n_test > source["n_test_available"]:
            parser.error(f"--n-test {n_test} exceeds the {source['n_test_available']} images")

        probes: dict[int, list[dict]] = {}
        chunk = args.chunk
        if not args.no_probe and chunk is None:
            values = [int(v) for v in args.probe_chunks.split(",") if v.strip()]
            n_probe = min(args.probe_images, n_test)
            for r in range(args.probe_rounds):
                order = values if r % 2 == 0 else values[::-1]
                for value in order:
                    res = run_worker(state, n_probe, args.k, value, args.seed, tmp)
                    probes.setdefault(value, []).append(res)
            print(f"\nprobe: {n_probe} images, K={args.k}, {args.probe_rounds} rounds")
            print(f"{'max_samples_per_chunk':>22}{'median s':>10}{'s/image':>10}{'eval GB':>9}")
            for value, runs in probes.items():
                med = statistics.median(r["seconds"] for r in runs)
                inc = max(r["eval_peak_increase_bytes"] for r in runs) / GB
                print(f"{value:>22}{med:>10.2f}{med / n_probe:>10.4f}{inc:>9.2f}")
            chunk = min(probes, key=lambda v: statistics.median(r["seconds"] for r in probes[v]))
            print(f"using max_samples_per_chunk={chunk} (fastest median)", flush=True)
        chunk = chunk or 50_000

        print(f"\nmain run: {n_test} images, K={args.k}, max_samples_per_chunk={chunk} ...")
        sys.stdout.flush()
        main_run = run_worker(state, n_test, args.k, chunk, args.seed, tmp)

    seconds = main_run["seconds"]
    inc = main_run["eval_peak_increase_bytes"] / GB
    peak = main_run["peak_rss_bytes"] / GB
    print()
    print(f"{'':<34}{'value':>12}{'target':>10}")
    print(f"{'wall time (s)':<34}{seconds:>12.1f}{'<= 360':>10}")
    print(f"{'seconds per image':<34}{main_run['seconds_per_image']:>12.4f}")
    print(f"{'peak RSS increase in eval (GB)':<34}{inc:>12.3f}{'<= 3':>10}")
    print(f"{'peak RSS of the process (GB)':<34}{peak:>12.3f}")
    print(f"{'baseline before eval (GB)':<34}{main_run['baseline_peak_rss_bytes'] / GB:>12.3f}")
    print(
        f"{'start-up peak, before reset (GB)':<34}{main_run['startup_peak_rss_bytes'] / GB:>12.3f}"
    )
    print(
        f"{'IWAE-' + str(args.k) + ' (nats)':<34}{main_run['iwae']:>12.2f}"
        f"  (ELBO {main_run['elbo']:.2f})"
    )
    full = n_test == source["n_test_available"] and args.k == 5000
    if full:
        ok = seconds <= 360 and inc <= 3
        print(f"\ntargets (360 s, 3 GB): {'PASS' if ok else 'FAIL'}")
    else:
        scale = 5000 / args.k * source["n_test_available"] / n_test
        print(
            f"\n(not the full run; linear extrapolation to K=5000, 10,000 images: "
            f"{seconds * scale:.0f} s)"
        )

    write_json(
        args.out,
        {
            "benchmark": "iwae_eval",
            "description": "evaluate_bounds IWAE-K on MNIST test images, 784-400-20 VAE, CPU; "
            "memory = peak RSS increase during evaluation in a fresh worker process",
            "k": args.k,
            "n_test": n_test,
            "model": source,
            "max_samples_per_chunk": chunk,
            "main": main_run,
            "probes": {str(v): runs for v, runs in probes.items()},
            "targets": {"seconds": 360, "eval_peak_increase_gb": 3},
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
