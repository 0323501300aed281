"""CLI commands for Pyro latent-variable models: ``compare``, ``train vae`` and the
``evaluate`` handler for their checkpoints.

``ppl-gen compare`` is :func:`ppl_gen.jobs.compare.run_compare`, ``ppl-gen train vae`` is
:func:`ppl_gen.jobs.train_vae.run_train_vae` (SVI on a :mod:`ppl_gen.lvm.builders` model and
guide), and
``ppl-gen evaluate`` on a VAE checkpoint is :func:`ppl_gen.infer.evaluation.evaluate_on`.

Both run data-parallel when launched by ``torchrun --nproc-per-node N -m ppl_gen ...``
(:mod:`ppl_gen.core.distributed`): training averages gradients over the ranks, evaluation splits
the test set and gathers the per-datapoint bounds; rank 0 alone writes files and prints.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ppl_gen.cli.common import (
    BINARIZE,
    DATA,
    DATA_ROOT,
    DEVICE,
    DOWNLOAD,
    SEED,
    TENSORBOARD,
    Binarize,
    Covariance,
    ElboName,
    Estimator,
    EvaluateOptions,
    Guide,
    LatentModel,
    Likelihood,
    Objective,
    Precision,
    app,
    emit,
    evaluator,
    parse_hidden,
    train_app,
)
from ppl_gen.core.errors import PplGenError
from ppl_gen.engine.history import enable_tensorboard


@app.command()
def compare(
    model: str = typer.Option(
        "vae",
        help="vae, conv-vae, gmm, ppca, fa, or PATH.py:FACTORY (FACTORY(data) returns your own "
        "Pyro model, see README)",
    ),
    data: str = DATA,
    data_root: str = DATA_ROOT,
    download: bool = DOWNLOAD,
    schemes: str = typer.Option(
        None,
        help="comma-separated subset of em,mean-field,svi-local,amortised,semi-amortised,nuts "
        "(default: every scheme that applies to the model; vae: amortised,mean-field,"
        "semi-amortised)",
    ),
    epochs: int = typer.Option(
        None, help="SVI training epochs per scheme (default: 300 for VAEs, 100 otherwise)"
    ),
    batch_size: int = typer.Option(None, help="minibatch size (default: 64 VAEs, 128 otherwise)"),
    lr: float = typer.Option(None, help="Adam learning rate (default: 1e-3 VAEs, 1e-2 otherwise)"),
    latent_dim: int = typer.Option(2, help="latent dimension Z (2 also draws the manifold)"),
    hidden: str = typer.Option("256", help="hidden widths, comma-separated"),
    likelihood: Likelihood = typer.Option(
        "bernoulli", help="VAE: bernoulli, gaussian, laplace, student-t, categorical"
    ),
    components: int = typer.Option(10, help="gmm: number of mixture components"),
    covariance: Covariance = typer.Option("full", help="gmm: full or diag"),
    binarize: Binarize = typer.Option(
        None, help="dynamic, static or none (default: dynamic for the VAEs, none otherwise)"
    ),
    objective: Objective = typer.Option("elbo", help="training objective: elbo or iwae (IWAE-K)"),
    k: int = typer.Option(1, help="iwae: K, samples per datapoint of the training objective"),
    estimator: Estimator = typer.Option(
        "reparam", help="gradient estimator: reparam, stl (sticking the landing) or dreg (iwae)"
    ),
    guide_families: str = typer.Option(
        "diag",
        "--guide-family",
        help="guide families of the amortised and svi-local rows, comma-separated: diag "
        "(diagonal Gaussian), full (full-rank Gaussian), iaf (inverse autoregressive flow, "
        "amortised only), structured (q(z_j | x, its model children), amortised only); each "
        "family adds its own rows",
    ),
    iwae_k: int = typer.Option(1000, help="K of the test IWAE-K bound"),
    ais_steps: int = typer.Option(
        100,
        help="annealing steps of the AIS reference log p(x) for models without an exact "
        "one (0: none)",
    ),
    ais_chains: int = typer.Option(4, help="AIS chains per test point"),
    n_train: int = typer.Option(None, help="use only the first N training images"),
    n_test: int = typer.Option(None, help="use only the first N test images"),
    test_refit_steps: int = typer.Option(500, help="svi-local: Adam steps on test data"),
    em_max_iter: int = typer.Option(500, help="em / mean-field: maximum iterations"),
    em_tol: float = typer.Option(
        1e-6, help="em / mean-field: stopping tolerance (nats per datapoint; see README)"
    ),
    n_init: int = typer.Option(1, help="gmm em: k-means++ restarts"),
    semi_amortised_steps: int = typer.Option(200, help="semi-amortised: refinement steps"),
    nuts_subset: int = typer.Option(10, help="nuts: test points sampled"),
    nuts_samples: int = typer.Option(100, help="nuts: draws per chain"),
    nuts_warmup: int = typer.Option(100, help="nuts: warm-up steps per chain"),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/compare", help="output folder"),
    as_json: bool = typer.Option(False, "--json", help="print metrics.json to stdout"),
) -> None:
    """Fit one model with several inference schemes and compare ELBO, IWAE-K and the exact
    log-likelihood (main job)."""
    import os

    from ppl_gen.jobs.compare import CompareConfig, run_compare

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PplGenError(
            "compare runs as one process; launch it without torchrun "
            "(train vae and evaluate run data-parallel)"
        )

    config = CompareConfig(
        model=model,
        data=data,
        data_root=data_root,
        download=download,
        schemes=None
        if schemes is None
        else tuple(s.strip() for s in schemes.split(",") if s.strip()),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        latent_dim=latent_dim,
        hidden=parse_hidden(hidden),
        likelihood=likelihood,
        components=components,
        covariance=covariance,
        binarize=binarize,
        objective=objective,
        k=k,
        estimator=estimator,
        guide_families=tuple(f.strip() for f in guide_families.split(",") if f.strip()),
        iwae_k=iwae_k,
        ais_steps=ais_steps,
        ais_chains=ais_chains,
        n_train=n_train,
        n_test=n_test,
        test_refit_steps=test_refit_steps,
        em_max_iter=em_max_iter,
        em_tol=em_tol,
        n_init=n_init,
        semi_amortised_steps=semi_amortised_steps,
        nuts_subset=nuts_subset,
        nuts_samples=nuts_samples,
        nuts_warmup=nuts_warmup,
        seed=seed,
        device=device,
        out=out,
        progress=not as_json,
    )
    metrics = run_compare(config)
    report = Path(out) / "report.md"
    lines = [
        f"{'scheme':<15} {'test ELBO':>10} {'test IWAE':>10} {'log p(x)':>10}"
        "  (nats per test datapoint; log p(x) exact or by AIS)"
    ]
    for name, m in metrics["schemes"].items():
        if m.get("failed"):
            lines.append(f"{name:<15} failed: {m['failed']}")
            continue
        exact = m.get("test_log_likelihood")
        method = m.get("test_log_likelihood_method")
        exact_cell = (
            "n/a" if exact is None else f"{exact:.3f}" + (" AIS" if method == "ais" else "")
        )
        row = f"{name:<15} {m['test_elbo']:>10.3f} {m['test_iwae']:>10.3f} {exact_cell:>10}"
        lines.append(row)
    lines.append(f"report: {report.resolve()}")
    emit(metrics, as_json, "\n".join(lines))
    failed = {n: m["failed"] for n, m in metrics["schemes"].items() if m.get("failed")}
    if metrics["schemes"] and len(failed) == len(metrics["schemes"]):  # nothing to compare
        reasons = "; ".join(f"{n}: {str(r).splitlines()[0][:80]}" for n, r in failed.items())
        typer.echo(f"error: every scheme failed ({reasons})", err=True)
        raise typer.Exit(code=1)


@train_app.command("vae")
def train_vae(
    data: str = DATA,
    data_root: str = DATA_ROOT,
    download: bool = DOWNLOAD,
    model: LatentModel = typer.Option("vae", help="vae (MLP) or conv-vae (28x28 images)"),
    epochs: int = typer.Option(50, help="training epochs (in total, when resuming)"),
    batch_size: int = typer.Option(128, help="minibatch size (images per optimiser step)"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    latent_dim: int = typer.Option(20, help="latent dimension Z"),
    hidden: str = typer.Option("400", help="hidden widths, comma-separated"),
    likelihood: Likelihood = typer.Option(
        "bernoulli", help="bernoulli or gaussian (or laplace, student-t)"
    ),
    binarize: Binarize = BINARIZE,
    guide: Guide = typer.Option("amortised", help="amortised or mean-field"),
    elbo: ElboName = typer.Option("analytic-kl", help="trace, analytic-kl, jit or jit-analytic-kl"),
    objective: Objective = typer.Option("elbo", help="training objective: elbo or iwae (IWAE-K)"),
    k: int = typer.Option(1, help="iwae: K, samples per datapoint of the training objective"),
    estimator: Estimator = typer.Option(
        "reparam", help="gradient estimator: reparam, stl (sticking the landing) or dreg (iwae)"
    ),
    n_train: int = typer.Option(None, help="use only the first N training images"),
    precision: Precision = typer.Option(
        "fp32", help="fp32, or bf16 (forward passes under torch.autocast; bounds stay fp32)"
    ),
    deterministic: bool = typer.Option(
        False, help="torch.use_deterministic_algorithms (bit-reproducible, may be slower)"
    ),
    device: str = DEVICE,
    seed: int = SEED,
    out: str = typer.Option("runs/vae", help="output folder (checkpoint.pt, metrics.json)"),
    resume: bool = typer.Option(False, help="continue from OUT/checkpoint.pt"),
    as_json: bool = typer.Option(False, "--json", help="print the training summary as JSON"),
    tensorboard: bool = TENSORBOARD,
) -> None:
    """Train a VAE's model with an amortised or mean-field guide by SVI (data-parallel under
    torchrun: each process takes its part of every minibatch, gradients are averaged)."""
    enable_tensorboard(tensorboard)  # before any work: refuses a missing package
    from ppl_gen.core.distributed import init_from_env
    from ppl_gen.jobs.train_vae import TrainVAEConfig, run_train_vae

    config = TrainVAEConfig(
        data=data,
        data_root=data_root,
        download=download,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        latent_dim=latent_dim,
        hidden=parse_hidden(hidden),
        likelihood=likelihood,
        binarize=binarize,
        guide=guide,
        elbo=elbo,
        objective=objective,
        k=k,
        estimator=estimator,
        n_train=n_train,
        precision=precision,
        deterministic=deterministic,
        device=device,
        seed=seed,
        out=out,
        resume=resume,
        progress=not as_json,
    )
    config.validate()
    ctx = init_from_env(device)
    summary = run_train_vae(config, dist=ctx)
    if not ctx.is_main:  # rank 0 alone prints
        return
    emit(
        summary,
        as_json,
        f"trained {summary['epochs']} epochs; train ELBO {summary['final_train_elbo']:.3f} "
        f"nats/datapoint; checkpoint: {Path(config.checkpoint).resolve()}",
    )


@evaluator("latent-variable")
def evaluate_latent_variable(state: dict, opts: EvaluateOptions) -> tuple[dict, str]:
    """Test ELBO and IWAE-K (nats per test datapoint) of a ``ppl-gen train vae`` checkpoint;
    per-datapoint (mean-field) guides are refitted to the test data first.  Under torchrun
    the test set is split over the processes and the per-datapoint bounds gathered."""
    from ppl_gen.core.distributed import init_from_env
    from ppl_gen.core.errors import require_positive_int
    from ppl_gen.infer.evaluation import data_from_spec, evaluate_on, load_trained

    require_positive_int("iwae_k", opts.iwae_k)
    ctx = init_from_env(opts.device)
    if opts.ais_steps is not None and ctx.distributed:
        raise PplGenError("--ais-steps: AIS runs in one process; leave it out under torchrun")
    model, guide, state = load_trained(opts.checkpoint, str(ctx.device))
    splits = data_from_spec(state["spec"], name=opts.data, root=opts.data_root, n_test=opts.n_test)
    if splits.data_dim != model.data_dim:
        raise PplGenError(
            f"--data: the checkpoint's model takes {model.data_dim} values per datapoint, "
            f"{splits.name} has {splits.data_dim}"
        )
    x = splits.test.to(next(model.parameters()).device)
    ev = evaluate_on(model, guide, x, opts.iwae_k, refit_steps=opts.test_refit_steps, dist=ctx)
    result = {
        "checkpoint": opts.checkpoint,
        "dataset": splits.name,
        "n_test": int(x.shape[0]),
        "processes": ctx.world_size,
        "bound_seconds": ev.bound_seconds,
        **{f"test_{k}": v for k, v in ev.bounds.summary().items() if k != "k"},
        "iwae_k": opts.iwae_k,
    }
    message = (
        f"test ELBO {result['test_elbo']:.3f} ± {result['test_elbo_se']:.3f}, "
        f"IWAE-{opts.iwae_k} {result['test_iwae']:.3f} ± {result['test_iwae_se']:.3f} "
        f"nats per datapoint ({result['n_test']} test images)"
    )
    if opts.ais_steps is not None:  # AIS from the (refitted) guide: Neal 2001, Wu et al. 2017
        from ppl_gen.infer.bdmc import ais_metrics

        result.update(ais_metrics(model, ev.guide, x, opts.ais_steps, opts.ais_chains, opts.seed))
        message += (
            f"; AIS-{opts.ais_steps} log p(x) {result['test_log_likelihood_ais']:.3f} ± "
            f"{result['test_log_likelihood_ais_se']:.3f} (Monte Carlo ± "
            f"{result['test_log_likelihood_ais_mc_se']:.3f}, {opts.ais_chains} chains)"
        )
    return result, message
