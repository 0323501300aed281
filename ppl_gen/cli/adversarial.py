"""CLI commands for the adversarial generators: ``ppl-gen train
gan|dcgan|cgan|stylegan|cyclegan|pix2pix`` (stabiliser flags ``--loss hinge``,
``--spectral-norm``, ``--r1 GAMMA``, ``--ema DECAY`` on each) and the ``evaluate`` handlers
of their checkpoints.

The commands parse their options and call the jobs: ``train gan|dcgan|cgan`` is
:func:`ppl_gen.jobs.train_gan.run_train_gan`, ``train cyclegan`` is
:func:`ppl_gen.jobs.train_gan.run_train_cyclegan`; ``evaluate`` on their checkpoints is
:func:`ppl_gen.jobs.evaluate_gan.run_evaluate_gan` and
:func:`ppl_gen.jobs.evaluate_gan.run_evaluate_cyclegan` (the MNIST judge from
``--classifier`` or its cache location, :func:`ppl_gen.metrics.classifier.load_classifier`).
GAN checkpoints are also registered as decoder-only pairs for ``ppl-gen latent``
(:mod:`ppl_gen.latent.pairs`).  ``--resume`` may raise ``--epochs`` and ``--decay-epochs``
(the learning-rate schedule follows the new totals); other changed options are refused.

The training commands are data-parallel under ``torchrun --nproc-per-node N -m ppl_gen
train dcgan ...`` (each process takes its part of every batch; rank 0 alone writes and
prints); ``--precision bf16`` and ``--deterministic`` as for ``train vae``.
"""

from __future__ import annotations

from typing import Literal

import typer

from ppl_gen.cli.common import (
    DATA_ROOT,
    DEVICE,
    JSON,
    RESUME,
    SEED,
    TENSORBOARD,
    Channels,
    EvaluateOptions,
    GanLoss,
    Precision,
    emit,
    evaluator,
    parse_hidden,
    train_app,
)
from ppl_gen.core.errors import PplGenError
from ppl_gen.engine.history import enable_tensorboard

GAN_DATA_HELP = "mnist, digits, mnistm, or a folder of images (class subfolders = labels)"
BSDS_ROOT = typer.Option(None, help="mnistm: folder of colour photographs (BSDS500 train)")
PRECISION = typer.Option("fp32", help="fp32, or bf16 (forward passes under torch.autocast)")
DETERMINISTIC = typer.Option(
    False, help="torch.use_deterministic_algorithms (bit-reproducible, may be slower)"
)
# Stabilisers of every adversarial trainer (ppl_gen.gan.stabilisers)
SPECTRAL_NORM = typer.Option(
    False, help="spectral normalisation of the discriminator's layers (Miyato et al. 2018)"
)
R1 = typer.Option(
    0.0, "--r1", help="R1 penalty gamma on real images (Mescheder et al. 2018; 0: off, e.g. 10)"
)
EMA = typer.Option(
    0.0, "--ema", help="generator EMA decay in [0, 1) for samples and metrics (0: off, e.g. 0.999)"
)


def _channels(text: str) -> int | None:
    if text == "auto":
        return None
    if text in ("1", "3"):
        return int(text)
    raise PplGenError(f"--channels must be auto, 1 or 3, got {text!r}")


def _gan_command(model: str, default_data: str):
    def command(
        data: str = typer.Option(default_data, help=GAN_DATA_HELP),
        data_root: str = DATA_ROOT,
        bsds_root: str = BSDS_ROOT,
        n_train: int = typer.Option(None, help="train on a seeded random subset of N images"),
        channels: Channels = typer.Option("auto", help="auto (as stored), 1 (grey) or 3 (colour)"),
        loss: GanLoss = typer.Option("vanilla", help="vanilla, lsgan or wgan-gp"),
        epochs: int = typer.Option(5, help="training epochs (in total, when resuming)"),
        batch_size: int = typer.Option(64, help="images per step"),
        latent_dim: int = typer.Option(100, help="dimension of the noise z"),
        lr: float = typer.Option(2e-4, help="Adam learning rate of both networks"),
        g_lr: float = typer.Option(None, help="the generator's learning rate (default: --lr)"),
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
        spectral_norm: bool = SPECTRAL_NORM,
        r1: float = R1,
        ema: float = EMA,
        precision: Precision = PRECISION,
        deterministic: bool = DETERMINISTIC,
        device: str = DEVICE,
        seed: int = SEED,
        out: str = typer.Option(f"runs/{model}", help="output folder"),
        resume: bool = RESUME,
        as_json: bool = JSON,
        tensorboard: bool = TENSORBOARD,
    ) -> None:
        enable_tensorboard(tensorboard)  # before any work: refuses a missing package
        from ppl_gen.core.device import resolve_device
        from ppl_gen.core.distributed import init_from_env
        from ppl_gen.core.io import check_output_dir
        from ppl_gen.gan.trainer import GANConfig
        from ppl_gen.jobs.train_gan import ImageSource, run_train_gan

        config = GANConfig(
            model=model,
            loss=loss,
            latent_dim=latent_dim,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            g_lr=g_lr,
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
            spectral_norm=spectral_norm,
            r1=r1,
            ema=ema,
        )
        config.validate()
        resolve_device(device)
        source = ImageSource(data, data_root, bsds_root, n_train, seed, _channels(channels))
        ctx = init_from_env(device)
        metrics = run_train_gan(config, source, resume=resume, dist=ctx)
        if not ctx.is_main:  # rank 0 alone prints
            return
        emit(
            metrics,
            as_json,
            f"{model}: {metrics['epochs']} epochs on {metrics['n_train']} images "
            f"{tuple(metrics['image_shape'])}, D loss {metrics['final_d_loss']:.4f}, G loss "
            f"{metrics['final_g_loss']:.4f}, {metrics['train_seconds']:.1f} s; wrote "
            f"{out}/checkpoint.pt, samples_epoch_*.png, loss_curves.png, metrics.json",
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
    loss: GanLoss = typer.Option("lsgan", help="lsgan (paper), vanilla or wgan-gp"),
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
    spectral_norm: bool = SPECTRAL_NORM,
    r1: float = R1,
    ema: float = EMA,
    precision: Precision = PRECISION,
    deterministic: bool = DETERMINISTIC,
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/cyclegan", help="output folder"),
    resume: bool = RESUME,
    as_json: bool = JSON,
    tensorboard: bool = TENSORBOARD,
) -> None:
    """Train CycleGAN between two unpaired image sets (default MNIST <-> MNIST-M).

    Zhu et al. 2017: ResNet generators, PatchGAN discriminators, cycle and identity losses.
    """
    enable_tensorboard(tensorboard)  # before any work: refuses a missing package
    from ppl_gen.core.device import resolve_device
    from ppl_gen.core.distributed import init_from_env
    from ppl_gen.core.io import check_output_dir
    from ppl_gen.gan.cycle_trainer import CycleGANConfig
    from ppl_gen.jobs.train_gan import ImageSource, run_train_cyclegan

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
        spectral_norm=spectral_norm,
        r1=r1,
        ema=ema,
    )
    config.validate()
    resolve_device(device)
    source_a = ImageSource(data_a, data_root, bsds_root, n_train, seed)
    source_b = ImageSource(data_b, data_root, bsds_root, n_train, seed + 1)
    ctx = init_from_env(device)
    metrics = run_train_cyclegan(
        config, source_a, source_b, match_channels=match_channels, resume=resume, dist=ctx
    )
    if not ctx.is_main:  # rank 0 alone prints
        return
    final, nan = metrics["final"], float("nan")
    emit(
        metrics,
        as_json,
        f"cyclegan {data_a} <-> {data_b}: {metrics['epochs']} epochs, G loss "
        f"{final.get('g_loss', nan):.3f} (cycle {final.get('cycle_loss', nan):.3f}), "
        f"{metrics['train_seconds']:.1f} s; wrote {out}/checkpoint.pt, samples_epoch_*.png, "
        "loss_curves.png, metrics.json",
    )


GAN_LOSSES = Literal["vanilla", "lsgan", "wgan-gp", "hinge"]
STYLEGAN_LOSS = typer.Option("vanilla", help="GAN loss (wgan-gp: no batch norm in D)")
PIX2PIX_LOSS = typer.Option("vanilla", help="adversarial loss (vanilla in the paper)")


@train_app.command("stylegan")
def train_stylegan_command(
    data: str = typer.Option("mnist", help="mnist, mnistm, or a folder of 28x28 / 32x32 images"),
    data_root: str = DATA_ROOT,
    bsds_root: str = BSDS_ROOT,
    n_train: int = typer.Option(None, help="train on a seeded random subset of N images"),
    channels: str = typer.Option("auto", help="auto (as stored), 1 (grey) or 3 (colour)"),
    loss: GAN_LOSSES = STYLEGAN_LOSS,
    epochs: int = typer.Option(5, help="training epochs (in total, when resuming)"),
    batch_size: int = typer.Option(64, help="images per step"),
    latent_dim: int = typer.Option(64, help="dimension of z and of the style code w"),
    mapping_layers: int = typer.Option(4, help="fully connected layers of the mapping z -> w"),
    style_mixing: float = typer.Option(
        0.9, help="probability of style mixing per training batch (0: off)"
    ),
    lr: float = typer.Option(2e-4, help="Adam learning rate of the discriminator"),
    g_lr: float = typer.Option(
        1e-3, help="Adam learning rate of the generator (equalised layers: ~5x --lr)"
    ),
    n_critic: int = typer.Option(None, help="D steps per G step (default 5 for wgan-gp, else 1)"),
    gp_weight: float = typer.Option(10.0, help="wgan-gp: gradient-penalty weight"),
    ngf: int = typer.Option(32, help="synthesis channels at the finest resolution"),
    ndf: int = typer.Option(32, help="discriminator filters (the DCGAN discriminator)"),
    decay_epochs: int = typer.Option(0, help="decay the learning rate over the last N epochs"),
    spectral_norm: bool = SPECTRAL_NORM,
    r1: float = R1,
    ema: float = EMA,
    precision: str = PRECISION,
    deterministic: bool = DETERMINISTIC,
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/stylegan", help="output folder"),
    resume: bool = RESUME,
    as_json: bool = JSON,
) -> None:
    """Train the style-based generator (mapping network, AdaIN styles, noise inputs, style
    mixing) against the DCGAN discriminator on 28x28 or 32x32 images.

    Karras et al. 2019.  Writes checkpoint.pt, samples, loss curves, metrics.json and
    style_mixing.png (coarse styles from the row code, fine from the column code).
    """
    from ppl_gen.core.device import resolve_device
    from ppl_gen.core.distributed import init_from_env
    from ppl_gen.core.io import check_output_dir
    from ppl_gen.gan.trainer import GANConfig
    from ppl_gen.jobs.train_gan import ImageSource
    from ppl_gen.jobs.train_stylegan import run_train_stylegan

    config = GANConfig(
        model="stylegan",
        loss=loss,
        latent_dim=latent_dim,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        g_lr=g_lr,
        n_critic=n_critic,
        gp_weight=gp_weight,
        ngf=ngf,
        ndf=ndf,
        decay_epochs=decay_epochs,
        mapping_layers=mapping_layers,
        style_mixing=style_mixing,
        spectral_norm=spectral_norm,
        r1=r1,
        ema=ema,
        seed=seed,
        device=device,
        out=str(check_output_dir(out)),
        precision=precision,
        deterministic=deterministic,
    )
    config.validate()
    resolve_device(device)
    source = ImageSource(data, data_root, bsds_root, n_train, seed, _channels(channels))
    ctx = init_from_env(device)
    metrics = run_train_stylegan(config, source, resume=resume, dist=ctx)
    if not ctx.is_main:
        return
    emit(
        metrics,
        as_json,
        f"stylegan: {metrics['epochs']} epochs on {metrics['n_train']} images, D loss "
        f"{metrics['final_d_loss']:.4f}, G loss {metrics['final_g_loss']:.4f}, "
        f"{metrics['train_seconds']:.1f} s; wrote {out}/checkpoint.pt, samples_epoch_*.png, "
        "style_mixing.png, loss_curves.png, metrics.json",
    )


@train_app.command("pix2pix")
def train_pix2pix_command(
    direction: Literal["mnist-to-mnistm", "mnistm-to-mnist"] = typer.Option(
        "mnistm-to-mnist", help="translation direction over the aligned MNIST / MNIST-M pairs"
    ),
    data_root: str = DATA_ROOT,
    bsds_root: str = BSDS_ROOT,
    n_train: int = typer.Option(None, help="the first N training pairs (default: all)"),
    n_test: int = typer.Option(2000, help="the first N test pairs scored for metrics.json"),
    loss: GAN_LOSSES = PIX2PIX_LOSS,
    lambda_l1: float = typer.Option(100.0, help="weight of the L1 term (100 in the paper)"),
    epochs: int = typer.Option(5, help="training epochs (in total, when resuming)"),
    decay_epochs: int = typer.Option(0, help="decay the learning rate over the last N epochs"),
    batch_size: int = typer.Option(32, help="pairs per step"),
    lr: float = typer.Option(2e-4, help="Adam learning rate"),
    ngf: int = typer.Option(32, help="U-Net filters of the first layer"),
    ndf: int = typer.Option(32, help="PatchGAN filters of the first layer"),
    n_down: int = typer.Option(3, help="U-Net levels (28 -> 14 -> 7 -> 3)"),
    n_layers: int = typer.Option(2, help="PatchGAN stride-2 layers"),
    spectral_norm: bool = SPECTRAL_NORM,
    r1: float = R1,
    ema: float = EMA,
    precision: str = PRECISION,
    deterministic: bool = DETERMINISTIC,
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/pix2pix", help="output folder"),
    resume: bool = RESUME,
    as_json: bool = JSON,
) -> None:
    """Train pix2pix on paired MNIST <-> MNIST-M digits (each MNIST-M image with its source
    digit).

    Isola et al. 2017: U-Net generator, PatchGAN on (input, output) pairs, L1 + GAN loss.
    """
    from ppl_gen.core.io import check_output_dir
    from ppl_gen.gan.pix2pix_trainer import Pix2PixConfig
    from ppl_gen.jobs.train_pix2pix import PairSource, run_train_pix2pix

    config = Pix2PixConfig(
        loss=loss,
        lambda_l1=lambda_l1,
        epochs=epochs,
        decay_epochs=decay_epochs,
        batch_size=batch_size,
        lr=lr,
        ngf=ngf,
        ndf=ndf,
        n_down=n_down,
        n_layers=n_layers,
        spectral_norm=spectral_norm,
        r1=r1,
        ema=ema,
        seed=seed,
        device=device,
        out=str(check_output_dir(out)),
        precision=precision,
        deterministic=deterministic,
    )
    config.validate()
    pairs = PairSource(direction, data_root, bsds_root, n_train, n_test, seed)
    pairs.validate()
    metrics = run_train_pix2pix(config, pairs, resume=resume)
    emit(
        metrics,
        as_json,
        f"pix2pix {direction}: {metrics['epochs']} epochs on {metrics['n_train']} pairs, "
        f"test L1 {metrics['test_l1']:.4f} ({metrics['n_test']} pairs), "
        f"{metrics['train_seconds']:.1f} s; wrote {out}/checkpoint.pt, samples_epoch_*.png, "
        "loss_curves.png, metrics.json",
    )


def _evaluation(opts: EvaluateOptions):
    from ppl_gen.jobs.evaluate_gan import GeneratorEvaluation

    return GeneratorEvaluation(
        checkpoint=opts.checkpoint,
        classifier=opts.classifier,
        data=opts.data,
        data_root=opts.data_root,
        bsds_root=opts.bsds_root,
        n_test=opts.n_test,
        n_samples=opts.n_samples,
        device=opts.device,
        seed=opts.seed,
        out=opts.out,
        ais_steps=opts.ais_steps,
        ais_chains=opts.ais_chains,
    )


def _evaluate_gan(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    from ppl_gen.jobs.evaluate_gan import run_evaluate_gan

    result = run_evaluate_gan(state, _evaluation(opts))
    cov = result["mode_coverage"]
    message = (
        f"{state['kind']}: FD-LeNet {result['fd_lenet']:.3f} (floor "
        f"{result['fd_lenet_real_halves']:.3f}, ratio {result['fd_ratio']:.2f}; not comparable "
        f"to Inception FID), classifier IS {result['inception_score']:.2f}, classes covered "
        f"{cov['classes_covered']}/10 (KL to uniform {cov['kl_to_uniform']:.3f} nats)"
    )
    if "label_agreement" in result:
        message += f", label agreement {100 * result['label_agreement']:.1f}%"
    if "test_log_likelihood_ais" in result:  # Wu et al. 2017: N(G(z), sigma^2 I) by AIS
        message += (
            f", AIS-{result['ais_steps']} log p(x) {result['test_log_likelihood_ais']:.1f} ± "
            f"{result['test_log_likelihood_ais_se']:.1f} nats/image (sigma {result['ais_sigma']})"
        )
    return result, message + f" over {opts.n_samples} samples"


for _kind in ("gan", "dcgan", "cgan", "stylegan"):
    evaluator(_kind)(_evaluate_gan)


@evaluator("cyclegan")
def _evaluate_cyclegan(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    from ppl_gen.jobs.evaluate_gan import run_evaluate_cyclegan

    result = run_evaluate_cyclegan(state, _evaluation(opts))
    a, b = result["domains"]
    message = (
        f"cyclegan {a} <-> {b}: label preservation {b} -> {a} "
        f"{100 * result['label_preservation_b_to_a']:.1f}% (classifier on raw {b}: "
        f"{100 * result['baseline_accuracy_b']:.1f}%), {a} -> {b} "
        f"{100 * result['label_preservation_a_to_b']:.1f}%; cycle L1 "
        f"{result['cycle_l1_a']:.4f} (A), {result['cycle_l1_b']:.4f} (B)"
    )
    return result, message


@evaluator("pix2pix")
def _evaluate_pix2pix(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    from ppl_gen.jobs.train_pix2pix import run_evaluate_pix2pix

    r = run_evaluate_pix2pix(state, _evaluation(opts))
    message = (
        f"pix2pix {r['direction']}: per-pixel L1 {r['l1']:.4f} on {r['n_test']} test pairs, "
        f"label preservation {100 * r['label_preservation']:.1f}% (judge on raw sources "
        f"{100 * r['source_accuracy']:.1f}%, on real targets {100 * r['target_accuracy']:.1f}%)"
    )
    return r, message


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

    for kind in ("gan", "dcgan", "cgan", "stylegan"):
        register_pair_loader(kind, loader)


_register_latent_pairs()
