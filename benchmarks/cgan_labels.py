"""Quality target: >= 95% of conditional-GAN samples are classified as their requested label.

Conditional GAN (``ppl_gen.gan``: DCGAN body, label embedding into G and as an extra
input channel of D; ngf = ndf = 32, z of 64, vanilla loss, batch 64, Adam 2e-4 (0.5,
0.999)) trained on the 14,262 MNIST training images.  After each epoch listed in
``--eval-at`` it draws 10,000 samples (1,000 per label) and reports the label agreement of
the project's LeNet (``ppl-gen train classifier``), FD-LeNet against the 10,000 test images
with the real-halves floor, the classifier Inception score and mode coverage.  For scale,
the classifier's own accuracy on the real test images is printed too.

``.venv/bin/python benchmarks/cgan_labels.py [--data-root DIR] [--eval-at 10,20] [--quick]``
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
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, write_json

from ppl_gen.data.images import load_images
from ppl_gen.metrics.classifier import accuracy, load_classifier
from ppl_gen.metrics.generative import evaluate_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument(
        "--classifier",
        type=Path,
        default=None,
        help="MNIST judge (default: the cached one, metrics.classifier.default_classifier_path)",
    )
    parser.add_argument("--eval-at", default="10,20", help="epochs after which to evaluate")
    parser.add_argument("--n-samples", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="2,000 images, epochs 1,2")
    args = parser.parse_args()
    eval_at = sorted({int(e) for e in args.eval_at.split(",")})
    n_train = None
    if args.quick:
        eval_at, n_train = [1, 2], 2000
    t0 = time.perf_counter()
    classifier = load_classifier(args.classifier, "cpu")
    data = load_images("mnist", args.data_root, n=n_train)
    test = load_images("mnist", args.data_root, split="test")
    real_acc = accuracy(classifier, test.images, test.labels)
    print(f"classifier accuracy on the real test images: {100 * real_acc:.2f}%")
    config = benchmark_config("cgan", max(eval_at), "bench_cgan_labels")
    out = Path(config.out)
    rows = []
    for epoch, result, gen in train_in_stages(data, config, eval_at):
        m = evaluate_generator(gen, classifier, test.images, args.n_samples, seed=123)
        row = {
            "epoch": epoch,
            "train_seconds": result.seconds,
            "images_per_second": result.history["images_per_second"][-1],
            **m,
        }
        rows.append(row)
        print(
            f"epoch {epoch:3d}: label agreement {100 * m['label_agreement']:.2f}%  FD-LeNet "
            f"{m['fd_lenet']:.3f} (floor {m['fd_lenet_real_halves']:.3f}, ratio "
            f"{m['fd_ratio']:.2f})  IS {m['inception_score']:.2f}  classes covered "
            f"{m['mode_coverage']['classes_covered']}/10  [{result.seconds:.0f} s training]"
        )
    final = rows[-1]["label_agreement"]
    print(
        f"final label agreement {100 * final:.2f}% (target >= 95%): "
        f"{'pass' if final >= 0.95 else 'FAIL'}"
    )
    shutil.copy(out / f"samples_epoch_{max(eval_at):03d}.png", RESULTS / "cgan_samples.png")
    write_json(
        RESULTS / ("cgan_labels_quick.json" if args.quick else "cgan_labels.json"),
        {
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()
            },
            "n_train": int(data.images.shape[0]),
            "classifier_test_accuracy": real_acc,
            "rows": rows,
            "target_met": final >= 0.95,
            "load_average": os.getloadavg(),
            "threads": torch.get_num_threads(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t0,
        },
    )


if __name__ == "__main__":
    main()
