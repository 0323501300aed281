"""Inference and its scoring: SVI training, the schemes compared by ``compare``, the ELBO
and IWAE-K bounds, PSIS diagnostics and test-set evaluation."""
