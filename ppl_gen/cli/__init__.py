"""The ``ppl-gen`` command line: a thin layer over the Python API.

Commands live in one module per family (:mod:`ppl_gen.cli.latent_variable`, ...); each
registers itself on the shared Typer app in :mod:`ppl_gen.cli.common`.

Bad input (unknown names, missing data, bad numbers, unreadable checkpoints) prints one
line ``error: ...`` on stderr and exits with status 2, without a traceback; a diverged
training run exits with status 1.
"""

from __future__ import annotations

import functools
import re
import sys

import typer

# Importing a command module registers its commands on the shared app.
from ppl_gen.cli import (  # noqa: F401
    adversarial,
    autoencoders,
    classifier,
    dann,
    latent_variable,
)
from ppl_gen.cli.common import app, preflight
from ppl_gen.core.checkpoint import weights_mismatch
from ppl_gen.core.errors import PplGenError

__all__ = ["app", "main", "console"]


def _first_line(exc: BaseException) -> str:
    """The message's first line: Pyro appends the trace's shapes to errors raised inside a
    model or guide, which is noise for a user-facing one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@functools.cache
def _option_flags() -> dict[str, str]:
    """Every option of every command: parameter name -> its long flag (``batch_size`` ->
    ``--batch-size``)."""
    flags: dict[str, str] = {}
    stack = [command()]
    while stack:
        cmd = stack.pop()
        stack += list(getattr(cmd, "commands", {}).values())
        for param in cmd.params:
            if getattr(param, "param_type_name", "") == "option" and param.name:
                longs = [o for o in param.opts if o.startswith("--")]
                if longs:
                    flags.setdefault(param.name, longs[0])
    return flags


def flag_message(message: str) -> str:
    """The library names parameters (``epochs must be ...``); the command line names flags
    (``--epochs must be ...``): map a leading parameter name to its flag."""
    match = re.match(r"([a-z][a-z0-9_]*)\b", message)
    if match and match.group(1) in _option_flags():
        return _option_flags()[match.group(1)] + message[match.end() :]
    return message


def _with_preflight(callback, path: str):
    @functools.wraps(callback)
    def run(*args, **kwargs):
        preflight(path, kwargs)
        return callback(*args, **kwargs)

    return run


@functools.cache
def command():
    """The Click command tree of :data:`app`, built once, every command's callback wrapped
    so that :func:`ppl_gen.cli.common.preflight` checks its options (writable ``--out``,
    sizes that fit in memory, bounded IWAE cost) before it does any work."""
    root = typer.main.get_command(app)
    stack = [(root, "")]
    while stack:
        group, prefix = stack.pop()
        for name, sub in getattr(group, "commands", {}).items():
            path = f"{prefix} {name}".strip()
            if getattr(sub, "commands", None):
                stack.append((sub, path))
            elif sub.callback is not None:
                sub.callback = _with_preflight(sub.callback, path)
    return root


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppl-gen`` console script; returns the exit status."""
    from ppl_gen.infer.training import TrainingDiverged

    try:
        # Click returns typer.Exit's code (e.g. 1: compare where every scheme failed).
        code = command().main(args=argv, prog_name="ppl-gen", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    except PplGenError as exc:
        print(f"error: {flag_message(_first_line(exc))}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return 1
    except typer.Exit as exc:  # --version
        return exc.exit_code
    except RuntimeError as exc:
        mismatch = weights_mismatch(exc)
        if mismatch is None:
            raise
        print(f"error: {mismatch}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except Exception as exc:
        # Usage errors of the CLI library (bad option values, unknown commands, no
        # arguments): they carry their own message and exit code (2).
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        message = exc.format_message()
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(message, file=sys.stderr)
        else:
            # Typer validates Literal choices through pydantic, which prefixes "Value error, ".
            text = " ".join(message.split()).replace(": Value error, ", ": ")
            print(f"error: {text}", file=sys.stderr)
        return exc.exit_code or 2
    return 0


def console() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
