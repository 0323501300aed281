"""Deterministic autoencoders (plain, denoising, sparse, contractive; MLP and
convolutional) as PyTorch modules on the shared device layer, their trainer, and the
autoencoder-as-generator (a full-covariance Gaussian fitted to the training latents)."""
