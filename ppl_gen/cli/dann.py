"""CLI commands: dann (see the module docstrings of the library code it wraps)."""
