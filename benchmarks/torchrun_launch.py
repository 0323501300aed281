"""Shared by the scaling benchmarks: run a worker script under ``torchrun`` on loopback and
read back the JSON record it writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, nproc: int, worker_args: list[str], label: str) -> dict:
    """``torchrun --nproc-per-node nproc script --worker --worker-out TMP *worker_args``
    (one thread per process); returns the JSON rank 0 wrote to ``TMP``.  Exits with the
    job's stderr if it fails."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), script,
        "--worker", "--worker-out", str(out), *worker_args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{label}{nproc}-process run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    return result


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]
