"""Adversarial components on the shared device layer: GAN (Goodfellow et al. 2014),
DCGAN (Radford et al. 2016), conditional GAN, CycleGAN (Zhu et al. 2017) and DANN with
a gradient reversal layer (Ganin et al. JMLR 2016).  One idea per module."""
