"""Quality target: DCGAN's FD-LeNet falls with training, reported against the reference.

DCGAN (``ppl_gen.gan``; ngf = ndf = 32, z of 64, vanilla loss, batch 64, Adam 2e-4
(0.5, 0.999)) trained on the 14,262 MNIST training images.  After the epochs listed in
``--eval-at`` it draws 10,000 samples and measures FD-LeNet (Fréchet distance in the
feature space of the project's LeNet judge; not comparable to Inception FID) against the
10,000 official test images.  The **reference** is the FD-LeNet of 10,000 real training
images against the same test set (``benchmarks/judge.py``'s ``train_10k_vs_test``, computed
here with the judge in use): what a generator that reproduced training digits would score.  The
two-test-halves distance is recorded too, but it is not a floor (no train/test shift).
Printed and saved per evaluation point: FD, FD / reference, the classifier Inception score
and mode coverage of the samples; and the judge's weights SHA-256 and test accuracy.
Target: FD-LeNet falls at every evaluation.  Needs the cached reference judge
(``ppl-gen train classifier --data-root DIR``).

``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dcgan_fd.py [--data-root DIR] [--eval-at
1,5,15] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from gan_stages import benchmark_config, train_in_stages
from judge import describe_judge, judge_record
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment
from repo_paths import shown

from ppl_gen.core.io import save_with, write_json
from ppl_gen.data.images import load_images
from ppl_gen.gan.trainer import GANConfig
from ppl_gen.metrics.classifier import (
    default_classifier_path,
    load_classifier,
)
from ppl_gen.metrics.generative import (
    FDLeNet,
    classifier_inception_score,
    mode_coverage,
    predict_classes,
    sample_images,
)


def config_record(config: GANConfig) -> dict:
    """``config`` as JSON, its output folder relative to the repository."""
    record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()}
    record["out"] = shown(config.out)
    return record


def copy_atomic(source: Path, dest: Path) -> None:
    """Copy ``source`` over ``dest`` atomically (``ppl_gen.core.io.save_with``)."""
    save_with(dest, lambda tmp: shutil.copyfile(source, tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument(
        "--classifier",
        type=Path,
        default=None,
        help="MNIST judge (default: the cached one, metrics.classifier.default_classifier_path)",
    )
    parser.add_argument("--eval-at", default="1,5,15", help="epochs after which to evaluate")
    parser.add_argument("--n-samples", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="2,000 images, epochs 1,2")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    eval_at = sorted({int(e) for e in args.eval_at.split(",")})
    n_train = None
    if args.quick:
        eval_at, n_train = [1, 2], 2000
    t0 = time.perf_counter()
    path = args.classifier or default_classifier_path()
    classifier = load_classifier(path, "cpu")
    data = load_images("mnist", args.data_root, n=n_train)
    test = load_images("mnist", args.data_root, split="test")
    print(
        f"train {tuple(data.images.shape)}, test {tuple(test.images.shape)}, "
        f"threads {torch.get_num_threads()}"
    )
    judge = judge_record(classifier, path, test, args.data_root)
    reference = judge["fd_references"]["train_10k_vs_test"]
    print(f"{describe_judge(judge)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    fd_metric = FDLeNet(classifier, test.images)
    config = benchmark_config("dcgan", max(eval_at), "bench_dcgan_fd")
    out = Path(config.out)
    rows = []
    for epoch, result, gen in train_in_stages(data, config, eval_at):
        t1 = time.perf_counter()
        fake = sample_images(gen, args.n_samples, seed=123)
        fd = fd_metric.fd(fake)
        row = {
            "epoch": epoch,
            "train_seconds": result.seconds,
            "images_per_second": result.history["images_per_second"][-1],
            "fd_lenet": fd,
            "fd_over_reference": fd / reference,
            "inception_score": classifier_inception_score(classifier, fake),
            "mode_coverage": mode_coverage(predict_classes(classifier, fake)),
            "eval_seconds": time.perf_counter() - t1,
        }
        rows.append(row)
        print(
            f"epoch {epoch:3d}: FD-LeNet {fd:8.3f}  (reference {reference:.3f}, x"
            f"{fd / reference:.1f})  IS {row['inception_score']:.2f}  classes covered "
            f"{row['mode_coverage']['classes_covered']}/10 "
            f"(KL {row['mode_coverage']['kl_to_uniform']:.3f})  "
            f"[{result.seconds:.0f} s training, {row['images_per_second']:.0f} images/s]",
            flush=True,
        )
    improving = all(b["fd_lenet"] < a["fd_lenet"] for a, b in zip(rows, rows[1:], strict=False))
    print(f"FD-LeNet falls at every evaluation (target): {improving}")
    copy_atomic(out / f"samples_epoch_{max(eval_at):03d}.png", RESULTS / "dcgan_samples.png")
    dest = RESULTS / ("dcgan_fd_quick.json" if args.quick else "dcgan_fd.json")
    write_json(
        dest,
        {
            "config": config_record(config),
            "judge": judge,
            "fd_reference_train_10k_vs_test": reference,
            "n_train": int(data.images.shape[0]),
            "n_test": int(test.images.shape[0]),
            "n_samples": args.n_samples,
            "rows": rows,
            "fd_falls_at_every_evaluation": improving,
            "samples_png": shown(RESULTS / "dcgan_samples.png"),
            "load_average": os.getloadavg(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t0,
        },
    )
    print(f"wrote {shown(dest)}")


if __name__ == "__main__":
    main()
