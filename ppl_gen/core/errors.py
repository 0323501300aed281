"""User-facing errors.

Every mistake a user can make through the API or the CLI raises :class:`PplGenError`
(a ``ValueError``) with a one-line message that names the offending argument and what is
accepted.  The CLI turns it into ``error: <message>`` on stderr and exit code 2, with no
traceback.
"""

from __future__ import annotations


class PplGenError(ValueError):
    """Bad input: a one-line message naming the argument and what is accepted."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`PplGenError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise PplGenError(message)


def require_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an integer >= 1, else raise :class:`PplGenError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PplGenError(f"{name} must be a positive integer, got {value!r}")
    return value


#: Largest accepted seed: NumPy seeds are below 2**32 and some jobs derive seeds from the
#: user's one (``seed + 1``, ``seed + rank``, ...), so 2**16 values are kept free above it.
SEED_MAX = 2**32 - 2**16


def require_seed(name: str, value: int) -> int:
    """Return ``value`` if it is an integer in ``0 .. SEED_MAX`` (the same rule for every
    command and API), else raise :class:`PplGenError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise PplGenError(f"{name} must be an integer in 0..{SEED_MAX}, got {value!r}")
    return value
