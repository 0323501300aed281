"""``ppl-gen evaluate`` on GAN / DCGAN / cGAN and CycleGAN checkpoints: score the
generators with the MNIST judge (:mod:`ppl_gen.metrics.classifier`) and write
``metrics.json`` plus a sample grid (``samples.png``) or translation panel
(``translations.png``) into ``out``.

Nothing is looked up relative to the working directory: the test images come from
``data_root`` or the (absolute) ``root`` stored with the checkpoint's data, and the judge
from ``classifier`` or :func:`ppl_gen.metrics.classifier.default_classifier_path` (its
documented cache location).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import write_json
from ppl_gen.data.images import load_images, to_tanh_range
from ppl_gen.gan.cycle_trainer import load_cyclegan, translation_panel
from ppl_gen.gan.trainer import load_generator
from ppl_gen.metrics.classifier import load_classifier
from ppl_gen.metrics.cycle import evaluate_cyclegan
from ppl_gen.metrics.generative import balanced_labels, evaluate_generator, sample_images
from ppl_gen.viz.gan import TRANSLATION_ROWS, save_sample_grid

#: Training images on which ``--ais-steps`` chooses the observation noise sigma.
AIS_VALIDATION = 100


@dataclass
class GeneratorEvaluation:
    """Settings of :func:`run_evaluate_gan` / :func:`run_evaluate_cyclegan`.

    Attributes:
        checkpoint: the checkpoint's path (recorded in the result).
        classifier: the MNIST judge's checkpoint (``None``: the cached one,
            :func:`~ppl_gen.metrics.classifier.default_classifier_path`).
        data: test set override for a GAN (``mnist`` or ``mnistm``; default the training
            set when it is one of them, else ``mnist``).
        data_root, bsds_root: MNIST folder and BSDS500 photographs (default: the ones
            stored with the checkpoint).
        n_test: use the first ``n_test`` test images (``None``: all).
        n_samples: generated images scored (GANs).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of the samples.
        out: folder for ``metrics.json`` and the figure (``None``: write nothing).
        ais_steps: GANs: also the AIS test log-likelihood under ``N(G(z), sigma^2 I)``
            with this many steps (Wu et al. 2017; :mod:`ppl_gen.infer.generator_likelihood`;
            ``sigma`` chosen on the first ``AIS_VALIDATION`` training images).
        ais_chains: AIS chains per test image.
    """

    checkpoint: str
    classifier: str | None = None
    data: str | None = None
    data_root: str | None = None
    bsds_root: str | None = None
    n_test: int | None = None
    n_samples: int = 10000
    device: str = "auto"
    seed: int = 0
    out: str | None = None
    ais_steps: int | None = None
    ais_chains: int = 16


def _mnist_root(spec: dict, opts: GeneratorEvaluation) -> str:
    root = opts.data_root or spec.get("root")
    if root is None:
        raise PplGenError(
            "data_root is required: a folder containing MNIST/raw (the test set); the "
            "checkpoint records none"
        )
    return str(root)


def run_evaluate_gan(state: dict, opts: GeneratorEvaluation) -> dict[str, Any]:
    """Score a GAN / DCGAN / cGAN generator of 28x28 images (FD-LeNet, classifier IS,
    mode coverage, label agreement for a cGAN: :func:`~ppl_gen.metrics.generative.
    evaluate_generator`) against the MNIST (or MNIST-M) test set.

    Returns:
        The metrics with ``kind``, ``checkpoint`` and ``epoch``.

    Raises:
        PplGenError: not a GAN checkpoint, images other than 28x28, no data root, a missing
            or wrong classifier.
    """
    device = resolve_device(opts.device)
    generator = load_generator(state, device)
    if opts.ais_steps is not None and generator.num_classes:
        raise PplGenError(
            "--ais-steps: the likelihood of a class-conditional generator needs labels; it "
            "applies to gan, dcgan and stylegan checkpoints"
        )
    shape = tuple(state["image_shape"])
    if shape[1:] != (28, 28):
        raise PplGenError(
            f"CHECKPOINT: the MNIST classifier scores 28x28 images; this {state['kind']} makes "
            f"{shape[1]}x{shape[2]} images (train it on data mnist)"
        )
    classifier = load_classifier(opts.classifier, device)
    spec = state.get("data") or {}
    name = opts.data or (spec.get("name") if spec.get("name") in ("mnist", "mnistm") else "mnist")
    test = load_images(
        name,
        _mnist_root(spec, opts),
        split="test",
        bsds_root=opts.bsds_root or spec.get("bsds_root"),
        channels=spec.get("channels") if name == spec.get("name") else None,
    )
    real = test.images[: opts.n_test] if opts.n_test else test.images
    metrics = evaluate_generator(generator, classifier, real, opts.n_samples, seed=opts.seed)
    result = {
        "kind": state["kind"],
        "checkpoint": opts.checkpoint,
        "epoch": state.get("epoch"),
        **metrics,
    }
    if opts.ais_steps is not None:
        from ppl_gen.infer.generator_likelihood import generator_ais_metrics

        train = load_images(
            name,
            _mnist_root(spec, opts),
            split="train",
            bsds_root=opts.bsds_root or spec.get("bsds_root"),
            channels=spec.get("channels") if name == spec.get("name") else None,
        )
        x_val = train.images[:AIS_VALIDATION].to(device)
        result.update(
            generator_ais_metrics(
                generator, x_val, real.to(device), opts.ais_steps, opts.ais_chains, opts.seed
            )
        )
    if opts.out:
        k = generator.num_classes
        labels = balanced_labels(10 * k, k) if k else None
        images = sample_images(generator, 10 * k if k else 100, labels=labels, seed=opts.seed)
        if labels is not None:  # one row per class
            images = images[torch.sort(labels, stable=True).indices]
        rows = [f"class {c}" for c in range(k)] if labels is not None else None
        save_sample_grid(images, Path(opts.out) / "samples.png", nrow=10, row_labels=rows)
        write_json(Path(opts.out) / "metrics.json", result)
    return result


def run_evaluate_cyclegan(state: dict, opts: GeneratorEvaluation) -> dict[str, Any]:
    """Score a CycleGAN between MNIST and MNIST-M: label preservation of both translations
    and cycle L1 (:func:`~ppl_gen.metrics.cycle.evaluate_cyclegan`) on the test sets.

    Returns:
        The metrics with ``kind``, ``checkpoint``, ``epoch`` and ``domains``.

    Raises:
        PplGenError: not a CycleGAN checkpoint, domains other than MNIST / MNIST-M, no data
            root, a missing or wrong classifier.
    """
    device = resolve_device(opts.device)
    nets = load_cyclegan(state, device)
    spec = state.get("data") or {}
    sa, sb = spec.get("a", {}), spec.get("b", {})
    bsds = opts.bsds_root or sb.get("bsds_root") or sa.get("bsds_root")
    domains = []
    for s in (sa, sb):
        name = s.get("name")
        if name not in ("mnist", "mnistm"):
            raise PplGenError(
                f"CHECKPOINT: cyclegan evaluation needs MNIST / MNIST-M domains, got {name!r}"
            )
        d = load_images(
            name, _mnist_root(sa, opts), split="test", bsds_root=bsds, channels=s.get("channels")
        )
        n = opts.n_test or d.images.shape[0]
        domains.append((d.images[:n], d.labels[:n]))
    (x_a, y_a), (x_b, y_b) = domains
    classifier = load_classifier(opts.classifier, device)
    metrics = evaluate_cyclegan(nets, classifier, x_a, x_b, y_b=y_b, y_a=y_a)
    result = {
        "kind": "cyclegan",
        "checkpoint": opts.checkpoint,
        "epoch": state.get("epoch"),
        "domains": [sa.get("name"), sb.get("name")],
        **metrics,
    }
    if opts.out:
        panel = translation_panel(
            nets, to_tanh_range(x_a[:8]).to(device), to_tanh_range(x_b[:8]).to(device)
        )
        save_sample_grid(
            panel, Path(opts.out) / "translations.png", nrow=8, row_labels=TRANSLATION_ROWS
        )
        write_json(Path(opts.out) / "metrics.json", result)
    return result
