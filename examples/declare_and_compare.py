"""Declare a latent-variable model in a few lines, fit it with an amortised and a
mean-field guide, and print test ELBO and IWAE-K (nats per test image).

Run:  python examples/declare_and_compare.py   (about a minute on 2 CPU cores)
"""

import ppl_gen
from ppl_gen.guides import AmortisedGaussianGuide, MeanFieldGuide

data = ppl_gen.load_dataset("digits", binarize="dynamic", seed=0)  # 8x8 digits, D = 64

for name in ("amortised", "mean-field"):
    # p(z) = N(0, I_8),  p(x | z) = Bernoulli(decoder(z)): declared, not hand-written.
    model = ppl_gen.LatentVariableModel(
        latent_dim=8,
        decoder=ppl_gen.mlp(8, [128], 64),
        data_dim=64,
        likelihood="bernoulli",
        image_shape=(8, 8),
    )
    if name == "amortised":
        guide = AmortisedGaussianGuide(model, hidden=(128,))  # q(z | x; phi)
    else:
        guide = MeanFieldGuide(model, num_data=len(data.train))  # q^(i)(z_i)
    config = ppl_gen.TrainConfig(epochs=150, batch_size=64, progress=False)
    ppl_gen.train(model, guide, data, config)
    # Mean-field guides get local parameters fitted to the test images (model frozen).
    result = ppl_gen.evaluate_on(model, guide, data.test, k=1000)
    b = result.bounds
    print(
        f"{name:>10}: test ELBO {b.elbo_mean:.2f} ± {b.elbo_se:.2f}, "
        f"IWAE-1000 {b.iwae_mean:.2f} ± {b.iwae_se:.2f} nats per image"
    )
