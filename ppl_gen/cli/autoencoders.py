"""CLI commands: autoencoders (see the module docstrings of the library code it wraps)."""
