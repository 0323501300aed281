"""Latent-variable model building blocks: declaration, likelihoods, priors, the data plate,
network builders and the tractable-model interface."""
