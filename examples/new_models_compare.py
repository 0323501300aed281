"""Declare two models that ``ppl_gen.models`` does not ship and run the full comparison.

1. A VAE with a learnable mixture-of-Gaussians prior and a Student-t likelihood, declared
   in one call; it has no exact posterior, so it is compared with svi-local, amortised and
   semi-amortised inference.
2. A linear-Gaussian factor model declared the same way plus its exact posterior and
   marginal likelihood (a few lines of algebra): offering ``exact_posterior`` is enough to
   get the ``em`` scheme (Monte Carlo EM) and exact log-likelihoods in the table.

Run:  python examples/new_models_compare.py   (about 30 s on 2 CPU cores)
Reports land in runs/example_mog_student_t/ and runs/example_linear_gaussian/.
"""

import pyro.distributions as dist
import torch
from torch import nn

import ppl_gen


def mog_student_t_vae(data):
    """p(z) = sum_k pi_k N(mu_k, diag s_k^2) (10 components),  p(x|z) = Student-t(3)."""
    return ppl_gen.LatentVariableModel(
        latent_dim=4,
        decoder=ppl_gen.mlp(4, [128], data.data_dim),
        data_dim=data.data_dim,
        likelihood="student-t",
        prior="mog",
        image_shape=data.image_shape,
    )


class LinearGaussian(ppl_gen.LatentVariableModel):
    """z ~ N(0, I_Q),  x | z ~ N(W z + b, sigma^2 I): declared, plus its exact posterior."""

    def __init__(self, data, latent_dim=5, sigma=0.2):
        super().__init__(
            latent_dim,
            nn.Linear(latent_dim, data.data_dim),
            data.data_dim,
            likelihood="gaussian",
            image_shape=data.image_shape,
            scale=sigma,
        )
        self.sigma2 = sigma**2

    def exact_posterior(self, x):  # p(z|x) = N(S W^T (x - b) / s^2, S), S = (I + W^T W / s^2)^-1
        w, b = self.decoder.weight, self.decoder.bias
        cov = torch.linalg.inv(torch.eye(self.latent_dim, device=x.device) + w.T @ w / self.sigma2)
        loc = (x - b) @ w @ cov / self.sigma2
        return dist.MultivariateNormal(loc, covariance_matrix=cov.expand(x.shape[0], -1, -1))

    def log_marginal(self, x):  # p(x) = N(b, W W^T + s^2 I)
        w, b = self.decoder.weight, self.decoder.bias
        cov = w @ w.T + self.sigma2 * torch.eye(self.data_dim, device=x.device)
        return dist.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


if __name__ == "__main__":
    common = dict(data="digits", binarize="none", epochs=100, iwae_k=500, progress=False)
    for name, factory, schemes in (
        ("mog_student_t", mog_student_t_vae, ("svi-local", "amortised", "semi-amortised")),
        ("linear_gaussian", LinearGaussian, ("em", "svi-local", "amortised", "semi-amortised")),
    ):
        config = ppl_gen.CompareConfig(schemes=schemes, out=f"runs/example_{name}", **common)
        metrics = ppl_gen.run_compare(config, model_factory=factory)
        print(f"\n{name}: nats per test image")
        for scheme, m in metrics["schemes"].items():
            exact = m["test_log_likelihood"]
            print(
                f"  {scheme:>15}: ELBO {m['test_elbo']:8.2f}  IWAE-{m['iwae_k']} "
                f"{m['test_iwae']:8.2f}  exact {'n/a' if exact is None else f'{exact:8.2f}'}"
            )
