"""Datasets: one container (:class:`DataSplits` for latent-variable models,
:class:`ImageData` for image models) and loaders for digits, MNIST, MNIST-M and arrays."""
