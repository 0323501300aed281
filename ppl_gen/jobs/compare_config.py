"""Settings of ``ppl-gen compare`` (:class:`CompareConfig`), checked before any work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.io import check_output_dir
from ppl_gen.data.datasets import BINARIZE_MODES
from ppl_gen.guides import GUIDE_FAMILIES as _FAMILIES
from ppl_gen.infer.schemes import SCHEMES, SchemeSettings, normalise_scheme
from ppl_gen.infer.training import TrainConfig
from ppl_gen.lvm.builders import COMPARE_MODELS, ModelSpec
from ppl_gen.lvm.user_model import FORM, is_model_file, load_model_factory

#: Guide families ``compare --guide-family`` offers: the distribution families of
#: :data:`ppl_gen.guides.GUIDE_FAMILIES` and the structured (dependency-ordered) encoder.
GUIDE_FAMILIES = (*_FAMILIES, "structured")

DEFAULT_SCHEMES = {
    "vae": ("amortised", "mean-field", "semi-amortised"),
    "conv-vae": ("amortised", "mean-field"),
    "ppca": ("em", "mean-field", "svi-local", "amortised", "semi-amortised", "nuts"),
    "fa": ("em", "mean-field", "svi-local", "amortised", "semi-amortised", "nuts"),
    "gmm": ("em", "mean-field", "svi-local", "amortised", "semi-amortised"),
}


@dataclass
class CompareConfig:
    """Settings of :func:`run_compare`.

    The defaults are the README's main job: the VAE on scikit-learn's digits with a 2-D
    latent space, amortised and mean-field guides, about a minute on 2 CPU cores.

    Attributes:
        model: ``vae``, ``conv-vae``, ``gmm``, ``ppca`` or ``fa``, or ``PATH.py:FACTORY``
            (:mod:`ppl_gen.lvm.user_model`: ``FACTORY(data)`` returns your own Pyro model;
            it gets the VAE defaults of the settings below).
        data: ``digits``, ``mnist`` or a ``.npy``/``.npz`` path; ``data_root`` for MNIST.
        schemes: subset of ``em, mean-field, svi-local, amortised, semi-amortised, nuts``
            (``None``: the model's applicable schemes, see ``DEFAULT_SCHEMES``).
        epochs, batch_size, lr, elbo: SVI settings shared by the SVI schemes (``None``:
            300 epochs, batch 64, Adam 1e-3 for the VAEs; 100 epochs, batch 128, Adam 1e-2
            for the linear-Gaussian and mixture models, whose few parameters take larger
            steps).
        latent_dim, hidden, likelihood: the VAE / PPCA / FA latent size, network widths,
            VAE likelihood; ``components``, ``covariance``: the GMM.
        binarize: ``dynamic``, ``static`` or ``none`` (``None``: dynamic for the VAEs,
            none for the linear-Gaussian and mixture models).
        objective, k, estimator: the SVI schemes' training objective, ``elbo`` or ``iwae``
            with ``k`` samples, and gradient estimator (:mod:`ppl_gen.infer.objectives`).
        iwae_k: K of the test IWAE-K bound.
        guide_families: guide families of the ``amortised`` / ``svi-local`` rows
            (``diag``, ``full``, ``iaf``, ``structured``; each adds rows ``<scheme>-<family>``).
        ais_steps, ais_chains: annealed importance sampling for the reference
            log-likelihood of models without an exact one (0 steps: none),
            :mod:`ppl_gen.jobs.compare_reference`.
        n_train, n_test: optional truncation of the splits.
        test_refit_steps, em_max_iter, em_tol, n_init, semi_amortised_steps, nuts_subset,
            nuts_warmup, nuts_samples: per-scheme settings (see
            :class:`~ppl_gen.infer.schemes.SchemeSettings`).
        seed, device, out, progress: reproducibility, device, output folder, progress bars.
    """

    model: str = "vae"
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    schemes: Sequence[str] | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    latent_dim: int = 2
    hidden: Sequence[int] = (256,)
    likelihood: str = "bernoulli"
    components: int = 10
    covariance: str = "full"
    binarize: str | None = None
    elbo: str = "analytic-kl"
    objective: str = "elbo"
    k: int = 1
    estimator: str = "reparam"
    iwae_k: int = 1000
    n_train: int | None = None
    n_test: int | None = None
    guide_families: Sequence[str] = ("diag",)
    ais_steps: int = 100
    ais_chains: int = 4
    test_refit_steps: int = 500
    em_max_iter: int = 500
    em_tol: float = 1e-6
    n_init: int = 1
    semi_amortised_steps: int = 200
    nuts_subset: int = 10
    nuts_warmup: int = 100
    nuts_samples: int = 100
    seed: int = 0
    device: str = "auto"
    out: str = "runs/compare"
    progress: bool = True

    @property
    def resolved_schemes(self) -> tuple[str, ...]:
        """The schemes to run (defaults filled in)."""
        if self.schemes is None:
            return DEFAULT_SCHEMES.get(self.model, ("amortised", "mean-field"))
        return tuple(normalise_scheme(s) for s in self.schemes)

    @property
    def is_vae(self) -> bool:
        """Whether the model is one of the VAEs (deep decoder) -- or a model from the user's
        file, which gets the VAE defaults."""
        return self.model in ("vae", "conv-vae") or is_model_file(self.model)

    @property
    def resolved_epochs(self) -> int:
        """SVI epochs (default 300 for the VAEs, 100 otherwise)."""
        return self.epochs if self.epochs is not None else (300 if self.is_vae else 100)

    @property
    def resolved_batch_size(self) -> int:
        """SVI minibatch size (default 64 for the VAEs, 128 otherwise)."""
        if self.batch_size is not None:
            return self.batch_size
        return 64 if self.is_vae else 128

    @property
    def resolved_lr(self) -> float:
        """Adam learning rate (default 1e-3 for the VAEs, 1e-2 otherwise)."""
        return self.lr if self.lr is not None else (1e-3 if self.is_vae else 1e-2)

    @property
    def resolved_binarize(self) -> str:
        """The binarisation mode (default: dynamic for VAEs, none otherwise)."""
        if self.binarize is not None:
            return self.binarize
        return "dynamic" if self.is_vae else "none"

    def settings(self, device: torch.device) -> SchemeSettings:
        """The :class:`~ppl_gen.infer.schemes.SchemeSettings` these options describe: the
        fields the two share, with model-dependent defaults resolved."""
        shared = {
            f.name: getattr(self, f.name) for f in fields(SchemeSettings) if hasattr(self, f.name)
        }
        return SchemeSettings(
            **shared
            | {
                "epochs": self.resolved_epochs,
                "batch_size": self.resolved_batch_size,
                "lr": self.resolved_lr,
                "hidden": tuple(self.hidden),
                "device": str(device),
            }
        )

    def validate(self) -> None:
        """Check every option before anything is loaded, trained or written.

        Raises:
            PplGenError: naming the first bad option and what is accepted.
        """
        if self.model not in COMPARE_MODELS and not is_model_file(self.model):
            raise PplGenError(
                f"model must be one of {', '.join(COMPARE_MODELS)} or {FORM}, got {self.model!r}"
            )
        schemes = list(self.resolved_schemes)
        if not schemes:
            raise PplGenError(f"schemes must name at least one of {', '.join(SCHEMES)}")
        for s in schemes:
            if s not in SCHEMES:
                raise PplGenError(f"schemes must be a subset of {', '.join(SCHEMES)}, got {s!r}")
        if len(set(schemes)) != len(schemes):
            raise PplGenError(f"schemes lists a scheme twice: {','.join(schemes)}")
        families = list(self.guide_families)
        for family in families:
            if family not in GUIDE_FAMILIES:
                raise PplGenError(
                    f"guide_families must be a subset of {', '.join(GUIDE_FAMILIES)}, "
                    f"got {family!r}"
                )
        if not families or len(set(families)) != len(families):
            raise PplGenError(
                f"guide_families must name one or more of {', '.join(GUIDE_FAMILIES)}, "
                f"each once, got {','.join(families)}"
            )
        if set(families) != {"diag"} and not {"amortised", "svi-local"} & set(schemes):
            raise PplGenError(
                "guide_families: the guide families apply to the amortised and svi-local "
                "schemes; add one of them to schemes"
            )
        if type(self.ais_steps) is not int or self.ais_steps < 0:
            raise PplGenError(f"ais_steps must be an integer >= 0, got {self.ais_steps!r}")
        require_positive_int("ais_chains", self.ais_chains)
        require_positive_int("epochs", self.resolved_epochs)
        require_positive_int("batch_size", self.resolved_batch_size)
        require_positive_int("iwae_k", self.iwae_k)
        for flag, value in (
            ("test_refit_steps", self.test_refit_steps),
            ("em_max_iter", self.em_max_iter),
            ("n_init", self.n_init),
            ("semi_amortised_steps", self.semi_amortised_steps),
            ("nuts_subset", self.nuts_subset),
            ("nuts_samples", self.nuts_samples),
            ("nuts_warmup", self.nuts_warmup),
        ):
            require_positive_int(flag, value)
        if not self.em_tol >= 0:
            raise PplGenError(f"em_tol must be >= 0, got {self.em_tol}")
        if self.resolved_binarize not in BINARIZE_MODES:
            raise PplGenError(
                f"binarize must be one of {', '.join(BINARIZE_MODES)}, got {self.binarize!r}"
            )
        if is_model_file(self.model):
            load_model_factory(self.model)
        else:
            self.spec(784, (28, 28)).validate_options()
        TrainConfig(
            epochs=self.resolved_epochs,
            batch_size=self.resolved_batch_size,
            lr=self.resolved_lr,
            elbo=self.elbo,
            objective=self.objective,
            k=self.k,
            estimator=self.estimator,
        ).validate()
        resolve_device(self.device)
        check_output_dir(self.out, "out")

    def spec(self, data_dim: int, image_shape: Sequence[int]) -> ModelSpec:
        """The :class:`~ppl_gen.lvm.builders.ModelSpec` of the model to compare."""
        return ModelSpec(
            self.model,
            data_dim,
            self.latent_dim,
            tuple(self.hidden),
            self.likelihood,
            tuple(image_shape),
            components=self.components,
            covariance=self.covariance,
        )
