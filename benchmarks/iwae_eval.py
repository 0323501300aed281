"""IWAE-K evaluation cost: ``evaluate_bounds`` with K = 5000 on the 10,000 MNIST test images.

784-400-20 VAE (``ppl_gen.models.VAE`` + ``AmortisedGaussianGuide``), trained briefly
(``--train-epochs``, default 1) or loaded from a ppl_gen ``--checkpoint`` (read weights-only,
:func:`ppl_gen.core.checkpoint.load_checkpoint`; e.g. ``vae_quality.py --checkpoint-dir``'s
``ppl_gen.pt`` or ``ppl-gen train vae``'s ``checkpoint.pt`` of that architecture); the bound
values do not matter here, only wall time (target <= 360 s, CPU) and peak memory (target
<= 3 GB).  ``--device cuda`` evaluates on the GPU (both ppl_gen and the reference; the
device is synchronised before every clock reading, and the peak CUDA memory allocated
during the evaluation is reported too).

Every measurement runs in a fresh worker process, so that its memory figures are its own:
the worker loads torch, Pyro, the model and the test images, takes the *baseline*, runs
``evaluate_bounds`` and reads the peak again; the evaluation's memory is ``peak - baseline``.
On Linux the worker first resets the kernel's peak-RSS mark ``VmHWM`` to the current RSS
(``echo 5 > /proc/self/clear_refs``), so that a transient start-up peak (imports,
``torch.load``) does not hide the evaluation's; the plain
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` before/after figures are recorded as well
(``ru_maxrss`` is not reset by ``clear_refs`` once a thread has exited).

Before the main run, a short probe (``--probe-images`` images, same K) tries a few
``max_samples_per_chunk`` values (``--probe-chunks``), interleaved over ``--probe-rounds``
rounds; the fastest median among those whose memory stays under ``--probe-memory-gb`` is
used for the main run (or give ``--chunk``).

The machine is shared and its speed drifts by factors of 2-3 over minutes, so the main run
is split into ``--segments`` parts with a plain-PyTorch IWAE-K of the same network
(:func:`plain_vae.plain_iwae`, ``--reference-images`` images) timed before, between and
after them; ``ratio_to_reference`` (median over segments of ppl_gen's seconds per image over
the mean of the two neighbouring reference timings) is the noise-robust figure, and
``reference seconds per image x N`` says what a hand-written evaluator took at the time.

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
from plain_vae import (
    RESULTS,
    PlainVAE,
    add_data_args,
    copy_from_ppl_gen,
    environment,
    load_mnist,
    plain_iwae,
    ppl_gen_modules,
    write_json,
)

GB = 1024**3


def _status(field: str) -> int:
    """A ``kB`` field of Linux ``/proc/self/status`` in bytes (-1 if unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _maxrss() -> int:
    """``ru_maxrss`` of this process in bytes (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS; returns whether that worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return 0 < _status("VmHWM") <= _status("VmRSS") + 16 * 1024**2


def worker(args: argparse.Namespace) -> None:
    """Evaluate once in this (fresh) process and write a JSON result."""
    from ppl_gen.infer.bounds import evaluate_bounds

    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    state = torch.load(args.worker, weights_only=True)
    x = state["x"][: args.n_test].to(device)
    model, guide = ppl_gen_modules()
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    model.to(device).eval()
    guide.to(device).eval()
    plain = PlainVAE()
    copy_from_ppl_gen(plain, model, guide)
    plain.to(device).eval()
    pyro.set_rng_seed(args.seed)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    cuda_before = torch.cuda.memory_allocated(device) if cuda else 0
    maxrss_before = _maxrss()
    reset = _reset_peak_rss()
    baseline = _status("VmHWM") if reset else maxrss_before
    baseline_rss = _status("VmRSS")
    n = x.shape[0]
    bounds, seg_seconds, ref_seconds = [], [], []
    edges = [round(i * n / args.segments) for i in range(args.segments + 1)]

    def reference() -> None:  # plain-PyTorch IWAE-K on the same first rows: machine speed now
        if args.reference_images:
            t = clock()
            plain_iwae(plain, x[: args.reference_images], args.k, args.chunk)
            ref_seconds.append((clock() - t) / args.reference_images)

    t0 = clock()
    reference()
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        t = clock()
        bounds.append(
            evaluate_bounds(model, guide, x[a:b], k=args.k, max_samples_per_chunk=args.chunk)
        )
        seg_seconds.append(clock() - t)
        reference()
    wall = clock() - t0
    seconds = sum(seg_seconds)
    maxrss_after = _maxrss()
    peak = _status("VmHWM") if reset else maxrss_after
    iwae = torch.cat([bd.iwae for bd in bounds])
    elbo = torch.cat([bd.elbo for bd in bounds])
    ratios = []
    if ref_seconds:
        for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            ref = (ref_seconds[i] + ref_seconds[i + 1]) / 2
            ratios.append(seg_seconds[i] / (b - a) / ref)
    result = {
        "n": int(x.shape[0]),
        "k": args.k,
        "max_samples_per_chunk": args.chunk,
        "seconds": seconds,
        "seconds_per_image": seconds / n,
        "segments": args.segments,
        "segment_seconds": seg_seconds,
        "reference_images": args.reference_images,
        "reference_seconds_per_image": ref_seconds,
        "ratio_to_reference_per_segment": ratios,
        "ratio_to_reference": statistics.median(ratios) if ratios else None,
        "wall_seconds_including_reference": wall,
        "peak_mark_reset_before_eval": reset,
        "baseline_rss_bytes": baseline_rss,
        "baseline_bytes": baseline,
        "peak_rss_bytes": peak,
        "eval_peak_increase_bytes": peak - baseline,
        "ru_maxrss_before_eval_bytes": maxrss_before,
        "ru_maxrss_after_eval_bytes": maxrss_after,
        "ru_maxrss_increase_bytes": maxrss_after - maxrss_before,
        "iwae": float(iwae.mean()),
        "iwae_se": float(iwae.std() / n**0.5) if n > 1 else None,
        "elbo": float(elbo.mean()),
        "elbo_se": float(elbo.std() / n**0.5) if n > 1 else None,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cuda_eval_peak_allocated_bytes": (
            torch.cuda.max_memory_allocated(device) - cuda_before if cuda else None
        ),
    }
    Path(args.result).write_text(json.dumps(result))


def run_worker(
    state: Path,
    n: int,
    k: int,
    chunk: int,
    seed: int,
    tmp: Path,
    segments: int = 1,
    ref: int = 0,
    threads: int = 0,
    device: str = "cpu",
) -> dict:
    out = tmp / f"result-{n}-{k}-{chunk}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(state)]
    cmd += ["--result", str(out), "--n-test", str(n), "--k", str(k)]
    cmd += ["--chunk", str(chunk), "--seed", str(seed)]
    cmd += ["--segments", str(segments), "--reference-images", str(ref)]
    cmd += ["--threads", str(threads), "--device", device]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.read_text())


def prepare_state(args: argparse.Namespace, tmp: Path) -> tuple[Path, dict]:
    """Train (or load) the VAE; save its weights and the test images for the workers."""
    from ppl_gen.core.checkpoint import load_checkpoint
    from ppl_gen.infer.training import TrainConfig, train

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


def probe_chunks(args, state: Path, n_test: int, tmp: Path) -> tuple[int, dict]:
    values = [int(v) for v in args.probe_chunks.split(",") if v.strip()]
    n_probe = min(args.probe_images, n_test)
    probes: dict[int, list[dict]] = {v: [] for v in values}
    for r in range(args.probe_rounds):
        for value in values if r % 2 == 0 else values[::-1]:
            res = run_worker(
                state, n_probe, args.k, value, args.seed, tmp, threads=args.threads,
                device=args.device,
            )  # fmt: skip
            probes[value].append(res)
    print(f"\nprobe: {n_probe} images, K={args.k}, {args.probe_rounds} round(s)")
    print(f"{'max_samples_per_chunk':>22}{'median s':>10}{'s/image':>10}{'eval GB':>9}")
    medians, memory = {}, {}
    for value, runs in probes.items():
        medians[value] = statistics.median(r["seconds"] for r in runs)
        memory[value] = max(r["eval_peak_increase_bytes"] for r in runs) / GB
        print(f"{value:>22}{medians[value]:>10.2f}{medians[value] / n_probe:>10.4f}", end="")
        print(f"{memory[value]:>9.2f}")
    fits = [v for v in values if memory[v] <= args.probe_memory_gb] or [min(values)]
    chunk = min(fits, key=medians.__getitem__)
    print(
        f"using max_samples_per_chunk={chunk} (fastest median among those using "
        f"<= {args.probe_memory_gb} GB)",
        flush=True,
    )
    summary = {
        str(v): {"median_seconds": medians[v], "eval_peak_increase_gb": memory[v], "runs": runs}
        for v, runs in probes.items()
    }
    return chunk, {"images": n_probe, "rounds": args.probe_rounds, "values": summary}


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
    parser.add_argument("--probe-rounds", type=int, default=3)
    parser.add_argument("--probe-memory-gb", type=float, default=1.5)
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument(
        "--segments",
        type=int,
        default=10,
        help="split the main run into this many parts, timing the plain-PyTorch reference "
        "between them",
    )
    parser.add_argument(
        "--reference-images",
        type=int,
        default=20,
        help="images of each plain-PyTorch IWAE-K reference timing (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="500 test images")
    parser.add_argument(
        "--out", type=Path, default=None, help="default results/iwae_eval.json (_cuda.json)"
    )
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from ppl_gen.core.device import resolve_device

    try:
        args.device = str(resolve_device(args.device))
    except ValueError as exc:  # PplGenError: no such device here
        parser.error(f"--device: {exc}")
    if args.out is None:
        args.out = RESULTS / ("iwae_eval.json" if args.device == "cpu" else "iwae_eval_cuda.json")
    if args.worker is not None:
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
        probe = None
        chunk = args.chunk
        if chunk is None and not args.no_probe:
            chunk, probe = probe_chunks(args, state, n_test, tmp)
        chunk = chunk or 50_000
        print(f"\nmain run: {n_test} images, K={args.k}, max_samples_per_chunk={chunk} ...")
        sys.stdout.flush()
        segments = max(1, min(args.segments, n_test // 10))
        main_run = run_worker(
            state,
            n_test,
            args.k,
            chunk,
            args.seed,
            tmp,
            segments,
            args.reference_images,
            args.threads,
            args.device,
        )

    seconds = main_run["seconds"]
    inc = main_run["eval_peak_increase_bytes"] / GB
    print()
    print(f"{'':<34}{'value':>12}{'target':>10}")
    print(f"{'wall time (s)':<34}{seconds:>12.1f}{'<= 360':>10}")
    print(f"{'seconds per image':<34}{main_run['seconds_per_image']:>12.4f}")
    if main_run["cuda_eval_peak_allocated_bytes"] is not None:
        cuda_gb = main_run["cuda_eval_peak_allocated_bytes"] / GB
        print(f"{'CUDA peak allocated in eval (GB)':<34}{cuda_gb:>12.3f}")
    print(f"{'peak RSS increase in eval (GB)':<34}{inc:>12.3f}{'<= 3':>10}")
    for label, key in (
        ("peak RSS during eval (GB)", "peak_rss_bytes"),
        ("baseline RSS before eval (GB)", "baseline_bytes"),
        ("ru_maxrss before eval (GB)", "ru_maxrss_before_eval_bytes"),
        ("ru_maxrss after eval (GB)", "ru_maxrss_after_eval_bytes"),
        ("ru_maxrss increase (GB)", "ru_maxrss_increase_bytes"),
    ):
        print(f"{label:<34}{main_run[key] / GB:>12.3f}")
    if main_run["ratio_to_reference"] is not None:
        ratio = main_run["ratio_to_reference"]
        ref = statistics.median(main_run["reference_seconds_per_image"])
        print(f"{'plain-PyTorch reference s/image':<34}{ref:>12.4f}")
        print(f"{'ratio ppl_gen / plain reference':<34}{ratio:>12.3f}")
        print(f"{'  reference-speed extrapolation (s)':<34}{ref * n_test:>12.1f}")
    print(f"{'IWAE-' + str(args.k) + ' (nats)':<34}{main_run['iwae']:>12.2f}", end="")
    print(f"  (ELBO {main_run['elbo']:.2f})")
    if n_test == source["n_test_available"] and args.k == 5000 and args.device == "cpu":
        ok = seconds <= 360 and inc <= 3
        print(f"\ntargets (360 s, 3 GB): {'PASS' if ok else 'FAIL'}")
    else:
        scale = 5000 / args.k * source["n_test_available"] / n_test
        print(
            "\n(not the full run; linear extrapolation to K=5000 on 10,000 images: "
            f"{seconds * scale:.0f} s)"
        )

    write_json(
        args.out,
        {
            "benchmark": "iwae_eval",
            "description": "evaluate_bounds IWAE-K on MNIST test images, 784-400-20 VAE; "
            "memory = peak RSS increase during evaluation in a fresh worker process",
            "device": args.device,
            "k": args.k,
            "n_test": n_test,
            "model": source,
            "max_samples_per_chunk": chunk,
            "main": main_run,
            "probe": probe,
            "targets": {"seconds": 360, "eval_peak_increase_gb": 3},
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
