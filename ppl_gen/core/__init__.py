"""Infrastructure every family shares: the device layer, atomic and durable writes,
safe checkpoints, errors, precision, threads and data parallelism."""
