"""Quality target: DCGAN's FD-LeNet improves with training, reported against the floor.

DCGAN (``ppl_gen.gan``; ngf = ndf = 32, z of 64, vanilla loss, batch 64, Adam 2e-4
(0.5, 0.999)) trained on the 14,262 MNIST training images.  After the epochs listed in
``--eval-at`` it draws 10,000 samples and measures FD-LeNet (Fréchet distance in the
project's LeNet feature space; not comparable to Inception FID) against the 10,000 official
test images, next to the *floor*: the same distance between two random halves of the test
set (5,000 vs 5,000).  Printed and saved: FD, floor, FD / floor per evaluation point, the
classifier Inception score and mode coverage of the samples.  Target: the ratio falls with
training.  Needs the cached classifier (``ppl-gen train classifier --data-root DIR``).

``.venv/bin/python benchmarks/dcgan_fd.py [--data-root DIR] [--eval-at 1,5,15] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from gan_stages import benchmark_config, train_in_stages
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, write_json

from ppl_gen.data.images import load_images
from ppl_gen.metrics.classifier import load_classifier
from ppl_gen.metrics.generative import (
    FDLeNet,
    classifier_inception_score,
    mode_coverage,
    predict_classes,
    real_halves_fd,
    sample_images,
)


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
    eval_at = sorted({int(e) for e in args.eval_at.split(",")})
    n_train = None
    if args.quick:
        eval_at, n_train = [1, 2], 2000
    classifier = load_classifier(args.classifier, "cpu")
    data = load_images("mnist", args.data_root, n=n_train)
    test = load_images("mnist", args.data_root, split="test").images
    print(
        f"train {tuple(data.images.shape)}, test {tuple(test.shape)}, "
        f"threads {torch.get_num_threads()}"
    )
    t0 = time.perf_counter()
    floor = real_halves_fd(classifier, test)
    fd_metric = FDLeNet(classifier, test)
    print(
        f"floor (FD-LeNet between two halves of the test set): {floor:.3f} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
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
            "fd_lenet_real_halves": floor,
            "ratio": fd / floor,
            "inception_score": classifier_inception_score(classifier, fake),
            "mode_coverage": mode_coverage(predict_classes(classifier, fake)),
            "eval_seconds": time.perf_counter() - t1,
        }
        rows.append(row)
        print(
            f"epoch {epoch:3d}: FD-LeNet {fd:8.3f}  floor {floor:.3f}  ratio {fd / floor:7.2f}  "
            f"IS {row['inception_score']:.2f}  classes covered "
            f"{row['mode_coverage']['classes_covered']}/10 "
            f"(KL {row['mode_coverage']['kl_to_uniform']:.3f})  "
            f"[{result.seconds:.0f} s training, {row['images_per_second']:.0f} images/s]"
        )
    improving = all(b["ratio"] < a["ratio"] for a, b in zip(rows, rows[1:], strict=False))
    print(f"ratio improves at every evaluation: {improving}")
    shutil.copy(out / f"samples_epoch_{max(eval_at):03d}.png", RESULTS / "dcgan_samples.png")
    write_json(
        RESULTS / ("dcgan_fd_quick.json" if args.quick else "dcgan_fd.json"),
        {
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()
            },
            "n_train": int(data.images.shape[0]),
            "n_test": int(test.shape[0]),
            "n_samples": args.n_samples,
            "rows": rows,
            "ratio_improves": improving,
            "load_average": os.getloadavg(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t0,
        },
    )
    json.dumps(rows)


if __name__ == "__main__":
    main()
