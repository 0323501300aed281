"""Portable CPU numerics: the same float32 results on every x86-64 CPU.

PyTorch's CPU results depend on the machine in three places: oneDNN (MKL-DNN) JIT-compiles
convolution kernels for the CPU's instruction set, ATen picks vectorised kernels (AVX2,
AVX-512, ...) at run time, and MKL chooses its BLAS code path by CPU.  A run with
:data:`PORTABLE_ENV` in its environment from the start and oneDNN switched off
(:func:`enter_portable_numerics`) uses ATen's scalar kernels (``ATEN_CPU_CAPABILITY=default``),
MKL's conditional numerical reproducibility mode (``MKL_CBWR=COMPATIBLE``: the same code
path on every Intel-compatible CPU) and one thread, so a seeded training gives bit-identical
weights across CPU models, at 2-3x the time.  Measured on an AVX2 machine: a LeNet epoch's
weights change with each of the three settings alone and do not change with
``MKL_ENABLE_INSTRUCTIONS``.  Other architectures (aarch64) are portable only among
themselves.

The environment is read when the kernels are first used, so a process that has already
run tensor operations cannot switch; :func:`run_portable_module` runs a module in a fresh
interpreter with that environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ppl_gen.core.errors import PplGenError

#: Environment of a portable run (module docs).
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def portable_numerics_active() -> bool:
    """Whether this process runs with :data:`PORTABLE_ENV` and ATen's scalar kernels."""
    env_ok = all(os.environ.get(k, "").lower() == v.lower() for k, v in PORTABLE_ENV.items())
    return env_ok and torch.backends.cpu.get_cpu_capability() == "DEFAULT"


def enter_portable_numerics() -> None:
    """Switch oneDNN off and use one thread in this process.

    Raises:
        PplGenError: the process was not started with :data:`PORTABLE_ENV`.
    """
    if not portable_numerics_active():
        raise PplGenError(
            "portable numerics need a fresh process started with "
            + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
        )
    torch.backends.mkldnn.enabled = False
    torch.set_num_threads(1)


def run_portable_module(module: str, args: Sequence[str], error_file: Path) -> None:
    """Run ``python -m module *args`` in a fresh interpreter with :data:`PORTABLE_ENV`
    (stdout and stderr, progress bars included, pass through).

    The child reports a failure by writing a one-line message to ``error_file`` and exiting
    non-zero; that message is raised here.

    Raises:
        PplGenError: the child exited with a non-zero status (its message, else the status).
    """
    error_file = Path(error_file)
    error_file.unlink(missing_ok=True)
    env = {**os.environ, **PORTABLE_ENV}
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, check=False)
    if proc.returncode != 0:
        message = error_file.read_text().strip() if error_file.exists() else ""
        error_file.unlink(missing_ok=True)
        raise PplGenError(message or f"the portable run of {module} exited with {proc.returncode}")
