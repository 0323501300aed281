"""Adversarial image generators on the shared device layer: GAN (Goodfellow et al. 2014),
DCGAN (Radford et al. 2016), conditional GAN (Mirza & Osindero 2014) and CycleGAN
(Zhu et al. 2017).  One idea per module; nothing here imports Pyro."""
