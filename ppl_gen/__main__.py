"""``python -m ppl_gen`` runs the ``ppl-gen`` command line, also as a ``torchrun`` worker.

Under ``torchrun --nproc-per-node N -m ppl_gen ...`` every process runs the same command
(:mod:`ppl_gen.core.distributed`): only rank 0 prints to stdout; errors go to stderr from the
rank that hit them.  A rank whose partner crashed stops with ``error: rank R of N: ...``
(exit status 1) and torchrun reports the crashed rank's own error (recorded with
``torch.distributed.elastic``'s ``record``).  The process group is left cleanly at exit.
"""

import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from ppl_gen.cli import main
from ppl_gen.core import distributed


@record
def run() -> int:
    """Run the command line; returns its exit status."""
    if distributed.launched_by_torchrun() and os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (rank 0 alone prints)
    try:
        return main()
    except distributed.RankFailed as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(run())
