"""CLI commands: adversarial (see the module docstrings of the library code it wraps)."""
