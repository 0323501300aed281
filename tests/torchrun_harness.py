"""Launching 2-process ``torchrun`` jobs on loopback for the distributed tests.

A test module doubles as the worker script: ``run_worker_job(__file__, out)`` starts it under
``torchrun --nproc-per-node 2`` (gloo, 127.0.0.1, one thread per process); each rank writes
its records to ``out/harness/rank{r}.pt``, which are returned for the checks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    *args: str, timeout: float = 100, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2`` on loopback, one thread per process; ``env``: extra
    environment variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def run_worker_job(script: str, out: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``script out`` on 2 processes; fail the test with the job's output unless both
    ranks wrote their records (``out/harness/rank{0,1}.pt``)."""
    proc = torchrun(script, str(out))
    harness = out / "harness"
    if not (harness / "rank0.pt").exists() or not (harness / "rank1.pt").exists():
        pytest.fail(f"worker job failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, [load_record(harness / f"rank{r}.pt") for r in (0, 1)]


def load_record(path: Path) -> dict:
    """A worker's record, read like a checkpoint (weights only); NumPy scalars, which
    histories may hold, are the one extra type allowed."""
    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core  # NumPy 2 / 1
    allowed = [np.dtype, core.multiarray.scalar]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


def record_written_files() -> list[str]:
    """Make every file ppl_gen writes from now on (all go through
    :func:`ppl_gen.core.io.atomic_path`) append its path to the returned list."""
    import ppl_gen.core.io

    written: list[str] = []
    atomic = ppl_gen.core.io.atomic_path

    @contextlib.contextmanager
    def recording(path):
        written.append(str(path))
        with atomic(path) as tmp:
            yield tmp

    ppl_gen.core.io.atomic_path = recording
    return written
