"""CLI commands for the adversarial generators: ``ppl-gen train gan|dcgan|cgan|cyclegan``
and the ``evaluate`` handlers of their checkpoints.

``train gan|dcgan|cgan`` is :func:`ppl_gen.gan.trainer.train_gan`, ``train
cyclegan`` is :func:`ppl_gen.gan.cycle_trainer.train_cyclegan`; ``evaluate`` on
their checkpoints is :func:`ppl_gen.metrics.generative.evaluate_generator` and
:func:`ppl_gen.metrics.cycle.evaluate_cyclegan` with the cached MNIST
classifier (:func:`ppl_gen.metrics.classifier.load_classifier`).  GAN checkpoints are also
registered as decoder-only pairs for ``ppl-gen latent`` (:mod:`ppl_gen.latent.pairs`).

The training commands are data-parallel under ``torchrun --nproc-per-node N -m ppl_gen
train dcgan ...`` (each process takes its part of every batch; rank 0 alone writes and
prints); ``--precision bf16`` and ``--deterministic`` as for ``train vae``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from ppl_gen.cli.common import (
    DATA_ROOT,
    DEVICE,
    JSON,
    RESUME,
    SEED,
    EvaluateOptions,
    emit,
    evaluator,
    parse_hidden,
    train_app,
)
from ppl_gen.core.errors import PplGenError

GAN_DATA_HELP = "mnist, digits, mnistm, or a folder of images (class subfolders = labels)"
BSDS_ROOT = typer.Option(None, help="mnistm: folder of colour photographs (BSDS500 train)")
PRECISION = typer.Option("fp32", help="fp32, or bf16 (forward passes under torch.autocast)")
DETERMINISTIC = typer.Option(
    False, help="torch.use_deterministic_algorithms (bit-reproducible, may be slower)"
)


def _channels(text: str) -> int | None:
    if text == "auto":
        return None
    if text in ("1", "3"):
        return int(text)
    raise PplGenError(f"--channels must be auto, 1 or 3, got {text!r}")


def _data_spec(
    name: str,
    root: str | None,
    bsds_root: str | None,
    n: int | None,
    seed: int,
    channels: int | None,
) -> dict:
    return {
        "name": name,
        "root": root,
        "bsds_root": bsds_root,
        "n": n,
        "seed": seed,
        "channels": channels,
    }


def _gan_command(model: str, default_data: str):
    def command(
        data: str = typer.Option(default_data, help=GAN_DATA_HELP),
        data_root: str = DATA_ROOT,
        bsds_root: str = BSDS_ROOT,
        n_train: int = typer.Option(None, help="train on a seeded random subset of N images"),
        channels: str = typer.Option("auto", help="auto (as stored), 1 (grey) or 3 (colour)"),
        loss: str = typer.Option("vanilla", help="vanilla, lsgan or wgan-gp"),
        epochs: int = typer.Option(5, help="training epochs (in total, when resuming)"),
        batch_size: int = typer.Option(64, help="images per step"),
        latent_dim: int = typer.Option(100, help="dimension of the noise z"),
        lr: float = typer.Option(2e-4, help="Adam learning rate of both networks"),
        n_critic: int = typer.Option(
            None, help="D steps per G step (default 5 for wgan-gp, else 1)"
        ),
        gp_weight: float = typer.Option(10.0, help="wgan-gp: gradient-penalty weight"),
        hidden: str = typer.Option("256,512", help="gan: generator hidden widths"),
        ngf: int = typer.Option(64, help="dcgan/cgan: generator filters (cgan-MLP: width)"),
        ndf: int = typer.Option(64, help="dcgan/cgan: discriminator filters"),
        decay_epochs: int = typer.Option(
            0, help="decay the learning rate linearly over the last N epochs"
        ),
        precision: str = PRECISION,
        deterministic: bool = DETERMINISTIC,
        device: str = DEVICE,
        seed: int = SEED,
        out: str = typer.Option(f"runs/{model}", help="output folder"),
        resume: bool = RESUME,
        as_json: bool = JSON,
    ) -> None:
        from ppl_gen.core.io import check_output_dir, write_json
        from ppl_gen.data.images import load_images
        from ppl_gen.gan.trainer import GANConfig, train_gan

        config = GANConfig(
            model=model,
            loss=loss,
            latent_dim=latent_dim,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            n_critic=n_critic,
            gp_weight=gp_weight,
            hidden=parse_hidden(hidden),
            ngf=ngf,
            ndf=ndf,
            decay_epochs=decay_epochs,
            seed=seed,
            device=device,
            out=str(check_output_dir(out)),
            precision=precision,
            deterministic=deterministic,
        )
        config.validate()
        from ppl_gen.core.device import resolve_device
        from ppl_gen.core.distributed import init_from_env

        resolve_device(device)
        ch = _channels(channels)
        images = load_images(
            data, data_root, n=n_train, seed=seed, bsds_root=bsds_root, channels=ch
        )
        spec = _data_spec(data, data_root, bsds_root, n_train, seed, ch)
        ctx = init_from_env(device)
        result = train_gan(images, config, resume=resume, data_spec=spec, dist=ctx)
        if not ctx.is_main:  # rank 0 alone writes and prints
            return
        metrics = {
            "kind": model,
            "data": spec,
            "n_train": int(images.images.shape[0]),
            "image_shape": list(images.image_shape),
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()
            },
            "epochs": result.epochs,
            "iterations": result.iterations,
            "train_seconds": result.seconds,
            "images_per_second": result.history["images_per_second"][-1]
            if result.history["images_per_second"]
            else None,
            "final_d_loss": result.history["d_loss"][-1] if result.history["d_loss"] else None,
            "final_g_loss": result.history["g_loss"][-1] if result.history["g_loss"] else None,
            "history": result.history,
            "warnings": result.warnings,
            "checkpoint": str(result.checkpoint),
            "processes": ctx.world_size,
        }
        write_json(Path(out) / "metrics.json", metrics)
        emit(
            metrics,
            as_json,
            f"{model}: {result.epochs} epochs on {metrics['n_train']} images "
            f"{tuple(images.image_shape)}, D loss {metrics['final_d_loss']:.4f}, G loss "
            f"{metrics['final_g_loss']:.4f}, {result.seconds:.1f} s; wrote {out}/checkpoint.pt, "
            f"samples_epoch_*.png, loss_curves.png, metrics.json",
        )

    command.__doc__ = {
        "gan": "Train the fully connected GAN.\n\nGoodfellow et al. 2014: MLP G and D.",
        "dcgan": "Train a DCGAN on 28x28 or 32x32 images.\n\nRadford et al. 2016.",
        "cgan": "Train a conditional GAN (label embedding into G and D).",
    }[model]
    return command


train_app.command("gan")(_gan_command("gan", "digits"))
train_app.command("dcgan")(_gan_command("dcgan", "mnist"))
train_app.command("cgan")(_gan_command("cgan", "mnist"))


@train_app.command("cyclegan")
def train_cyclegan_command(
    data_a: str = typer.Option("mnist", help="domain A: " + GAN_DATA_HELP),
    data_b: str = typer.Option("mnistm", help="domain B: " + GAN_DATA_HELP),
    data_root: str = DATA_ROOT,
    bsds_root: str = BSDS_ROOT,
    n_train: int = typer.Option(None, help="images per domain (seeded random subsets)"),
    match_channels: bool = typer.Option(
        True, help="give a grey domain 3 channels when the other is colour (identity loss)"
    ),
    loss: str = typer.Option("lsgan", help="lsgan (paper), vanilla or wgan-gp"),
    epochs: int = typer.Option(10, help="training epochs (in total, when resuming)"),
    decay_epochs: int = typer.Option(5, help="of which the last N decay the learning rate to 0"),
    batch_size: int = typer.Option(16, help="images per domain per step"),
    lr: float = typer.Option(2e-4, help="Adam learning rate"),
    lambda_cycle: float = typer.Option(10.0, help="cycle-consistency weight"),
    lambda_identity: float = typer.Option(0.5, help="identity weight, fraction of lambda-cycle"),
    pool_size: int = typer.Option(50, help="image pool size (0: off)"),
    ngf: int = typer.Option(32, help="generator filters"),
    ndf: int = typer.Option(32, help="discriminator filters"),
    n_blocks: int = typer.Option(3, help="residual blocks per generator"),
    n_down: int = typer.Option(2, help="generator downsamplings (2 in the paper, 1 for 28x28)"),
    n_layers: int = typer.Option(2, help="PatchGAN stride-2 layers"),
    precision: str = PRECISION,
    deterministic: bool = DETERMINISTIC,
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/cyclegan", help="output folder"),
    resume: bool = RESUME,
    as_json: bool = JSON,
) -> None:
    """Train CycleGAN between two unpaired image sets (default MNIST <-> MNIST-M).

    Zhu et al. 2017: ResNet generators, PatchGAN discriminators, cycle and identity losses.
    """
    from ppl_gen.core.device import resolve_device
    from ppl_gen.core.distributed import init_from_env
    from ppl_gen.core.io import check_output_dir, write_json
    from ppl_gen.data.images import load_images, with_channels
    from ppl_gen.gan.cycle_trainer import CycleGANConfig, train_cyclegan

    config = CycleGANConfig(
        loss=loss,
        epochs=epochs,
        decay_epochs=decay_epochs,
        batch_size=batch_size,
        lr=lr,
        lambda_cycle=lambda_cycle,
        lambda_identity=lambda_identity,
        pool_size=pool_size,
        ngf=ngf,
        ndf=ndf,
        n_blocks=n_blocks,
        n_down=n_down,
        n_layers=n_layers,
        seed=seed,
        device=device,
        out=str(check_output_dir(out)),
        precision=precision,
        deterministic=deterministic,
    )
    config.validate()
    resolve_device(device)
    a = load_images(data_a, data_root, n=n_train, seed=seed, bsds_root=bsds_root)
    b = load_images(data_b, data_root, n=n_train, seed=seed + 1, bsds_root=bsds_root)
    if match_channels and a.image_shape[0] != b.image_shape[0]:
        a, b = with_channels(a, 3), with_channels(b, 3)
    spec = {
        "a": _data_spec(data_a, data_root, bsds_root, n_train, seed, a.image_shape[0]),
        "b": _data_spec(data_b, data_root, bsds_root, n_train, seed + 1, b.image_shape[0]),
    }
    ctx = init_from_env(device)
    result = train_cyclegan(a, b, config, resume=resume, data_spec=spec, dist=ctx)
    if not ctx.is_main:  # rank 0 alone writes and prints
        return
    h = result.history
    metrics = {
        "kind": "cyclegan",
        "data": spec,
        "image_shapes": [list(a.image_shape), list(b.image_shape)],
        "config": asdict(config),
        "epochs": result.epochs,
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "images_per_second": h["images_per_second"][-1] if h["images_per_second"] else None,
        "final": {k: h[k][-1] for k in h if k.endswith("_loss") and h[k]},
        "history": h,
        "checkpoint": str(result.checkpoint),
        "processes": ctx.world_size,
    }
    write_json(Path(out) / "metrics.json", metrics)
    final, nan = metrics["final"], float("nan")
    emit(
        metrics,
        as_json,
        f"cyclegan {data_a} <-> {data_b}: {result.epochs} epochs, G loss "
        f"{final.get('g_loss', nan):.3f} (cycle {final.get('cycle_loss', nan):.3f}), "
        f"{result.seconds:.1f} s; wrote {out}/checkpoint.pt, samples_epoch_*.png, "
        "loss_curves.png, metrics.json",
    )


def _mnist_root(spec: dict, opts: EvaluateOptions) -> str | None:
    from ppl_gen.data.datasets import default_data_root

    root = opts.data_root or spec.get("root") or default_data_root()
    if root is None:
        raise PplGenError("--data-root is required: a folder containing MNIST/raw (the test set)")
    return str(root)


def _evaluate_gan(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    from ppl_gen.core.device import resolve_device
    from ppl_gen.core.io import write_json
    from ppl_gen.data.images import load_images
    from ppl_gen.gan.trainer import load_generator
    from ppl_gen.metrics.classifier import load_classifier
    from ppl_gen.metrics.generative import balanced_labels, evaluate_generator, sample_images
    from ppl_gen.viz.gan import save_sample_grid

    device = resolve_device(opts.device)
    generator = load_generator(state, device)
    shape = tuple(state["image_shape"])
    if shape[1:] != (28, 28):
        raise PplGenError(
            f"CHECKPOINT: the MNIST classifier scores 28x28 images; this {state['kind']} makes "
            f"{shape[1]}x{shape[2]} images (train it on --data mnist)"
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
    result = evaluate_generator(generator, classifier, real, opts.n_samples, seed=opts.seed)
    result = {
        "kind": state["kind"],
        "checkpoint": opts.checkpoint,
        "epoch": state.get("epoch"),
        **result,
    }
    if opts.out:
        n = 10 * (generator.num_classes or 10) if generator.num_classes else 100
        labels = balanced_labels(n, generator.num_classes) if generator.num_classes else None
        imgs = sample_images(generator, n, labels=labels, seed=opts.seed)
        if labels is not None:  # one row per class
            imgs = imgs[torch_argsort(labels)]
        save_sample_grid(imgs, Path(opts.out) / "samples.png", nrow=10)
        write_json(Path(opts.out) / "metrics.json", result)
    cov = result["mode_coverage"]
    message = (
        f"{state['kind']}: FD-LeNet {result['fd_lenet']:.3f} (floor "
        f"{result['fd_lenet_real_halves']:.3f}, ratio {result['fd_ratio']:.2f}; not comparable "
        f"to Inception FID), classifier IS {result['inception_score']:.2f}, classes covered "
        f"{cov['classes_covered']}/10 (KL to uniform {cov['kl_to_uniform']:.3f} nats)"
    )
    if "label_agreement" in result:
        message += f", label agreement {100 * result['label_agreement']:.1f}%"
    return result, message + f" over {opts.n_samples} samples"


def torch_argsort(labels):
    """Stable order of ``labels`` (rows of a per-class grid)."""
    import torch

    return torch.sort(labels, stable=True).indices


for _kind in ("gan", "dcgan", "cgan"):
    evaluator(_kind)(_evaluate_gan)


@evaluator("cyclegan")
def _evaluate_cyclegan(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    from ppl_gen.core.device import resolve_device
    from ppl_gen.core.io import write_json
    from ppl_gen.data.images import load_images, to_tanh_range
    from ppl_gen.gan.cycle_trainer import load_cyclegan, translation_panel
    from ppl_gen.metrics.classifier import load_classifier
    from ppl_gen.metrics.cycle import evaluate_cyclegan
    from ppl_gen.viz.gan import save_sample_grid

    device = resolve_device(opts.device)
    nets = load_cyclegan(state, device)
    spec = state.get("data") or {}
    sa, sb = spec.get("a", {}), spec.get("b", {})
    root = _mnist_root(sa, opts)
    bsds = opts.bsds_root or sb.get("bsds_root") or sa.get("bsds_root")
    domains = []
    for s in (sa, sb):
        name = s.get("name")
        if name not in ("mnist", "mnistm"):
            raise PplGenError(
                f"CHECKPOINT: cyclegan evaluation needs MNIST / MNIST-M domains, got {name!r}"
            )
        d = load_images(name, root, split="test", bsds_root=bsds, channels=s.get("channels"))
        n = opts.n_test or d.images.shape[0]
        domains.append((d.images[:n], d.labels[:n]))
    (x_a, y_a), (x_b, y_b) = domains
    classifier = load_classifier(opts.classifier, device)
    result = evaluate_cyclegan(nets, classifier, x_a, x_b, y_b=y_b, y_a=y_a)
    result = {
        "kind": "cyclegan",
        "checkpoint": opts.checkpoint,
        "epoch": state.get("epoch"),
        "domains": [sa.get("name"), sb.get("name")],
        **result,
    }
    if opts.out:
        panel = translation_panel(
            nets, to_tanh_range(x_a[:8]).to(device), to_tanh_range(x_b[:8]).to(device)
        )
        save_sample_grid(panel, Path(opts.out) / "translations.png", nrow=8)
        write_json(Path(opts.out) / "metrics.json", result)
    message = (
        f"cyclegan {sa.get('name')} <-> {sb.get('name')}: label preservation {sb.get('name')} -> "
        f"{sa.get('name')} {100 * result['label_preservation_b_to_a']:.1f}% (classifier on raw "
        f"{sb.get('name')}: {100 * result['baseline_accuracy_b']:.1f}%), {sa.get('name')} -> "
        f"{sb.get('name')} {100 * result['label_preservation_a_to_b']:.1f}%; cycle L1 "
        f"{result['cycle_l1_a']:.4f} (A), {result['cycle_l1_b']:.4f} (B)"
    )
    return result, message


def _register_latent_pairs() -> None:
    """GAN generators as decoder-only pairs for ``ppl-gen latent`` (when available)."""
    try:
        from ppl_gen.latent.pairs import EncoderDecoder, register_pair_loader
    except ImportError:  # the latent tools are optional here
        return

    def loader(path, state, device):
        from ppl_gen.data.images import to_unit
        from ppl_gen.gan.trainer import load_generator

        generator = load_generator(state, device)
        c, h, w = state["image_shape"]

        def decode(z, y=None):
            x = generator(z) if y is None else generator(z, y)
            return to_unit(x).reshape(z.shape[0], -1)

        return EncoderDecoder(
            encode=None,
            decode=decode,
            latent_dim=generator.latent_dim,
            image_shape=(h, w) if c == 1 else (c, h, w),
            num_classes=generator.num_classes,
            kind=state["kind"],
            data=state.get("data"),
            device=next(generator.parameters()).device,
        )

    for kind in ("gan", "dcgan", "cgan"):
        register_pair_loader(kind, loader)


_register_latent_pairs()
