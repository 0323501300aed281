"""Quality target: >= 95% of conditional-GAN samples are classified as their requested label.

Conditional GAN (``ppl_gen.gan``: DCGAN body, label embedding into G and as an extra
input channel of D plus the projection term; ngf = ndf = 32, z of 64, vanilla loss, batch
64, Adam 2e-4 (0.5, 0.999)) trained on the 14,262 MNIST training images.  After each epoch
listed in ``--eval-at`` it draws 10,000 samples (1,000 per label) and reports the label
agreement of the reference LeNet judge (``ppl-gen train classifier``; its weights SHA-256
and accuracy on the real test images are recorded), FD-LeNet against the 10,000 test
images next to the reference (10,000 real training images vs the test set,
``benchmarks/judge.py``, computed with the judge in use; ``evaluate_generator``'s
two-test-halves distance is kept in the rows as ``fd_lenet_real_halves`` but is not a
floor), the classifier Inception score and mode coverage.

``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cgan_labels.py [--data-root DIR] [--eval-at
10,20] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from dcgan_fd import config_record, copy_atomic
from gan_stages import benchmark_config, train_in_stages
from judge import describe_judge, judge_record
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment
from repo_paths import shown

from ppl_gen.core.io import write_json
from ppl_gen.data.images import load_images
from ppl_gen.metrics.classifier import default_classifier_path, load_classifier
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
    judge = judge_record(classifier, path, test, args.data_root)
    reference = judge["fd_references"]["train_10k_vs_test"]
    print(describe_judge(judge), flush=True)
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
            "fd_over_reference": m["fd_lenet"] / reference,
        }
        rows.append(row)
        print(
            f"epoch {epoch:3d}: label agreement {100 * m['label_agreement']:.2f}%  FD-LeNet "
            f"{m['fd_lenet']:.3f} (reference {reference:.3f}, x{row['fd_over_reference']:.2f})  "
            f"IS {m['inception_score']:.2f}  classes covered "
            f"{m['mode_coverage']['classes_covered']}/10  [{result.seconds:.0f} s training]",
            flush=True,
        )
    final = rows[-1]["label_agreement"]
    print(
        f"final label agreement {100 * final:.2f}% (target >= 95%): "
        f"{'pass' if final >= 0.95 else 'FAIL'}"
    )
    copy_atomic(out / f"samples_epoch_{max(eval_at):03d}.png", RESULTS / "cgan_samples.png")
    dest = RESULTS / ("cgan_labels_quick.json" if args.quick else "cgan_labels.json")
    write_json(
        dest,
        {
            "config": config_record(config),
            "judge": judge,
            "fd_reference_train_10k_vs_test": reference,
            "n_train": int(data.images.shape[0]),
            "classifier_test_accuracy": judge["test_accuracy"],
            "rows": rows,
            "target_met": final >= 0.95,
            "samples_png": shown(RESULTS / "cgan_samples.png"),
            "load_average": os.getloadavg(),
            "threads": torch.get_num_threads(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t0,
        },
    )
    print(f"wrote {shown(dest)}")


if __name__ == "__main__":
    main()
