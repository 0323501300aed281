"""``python -m ppl_gen`` runs the ``ppl-gen`` command line, also as a ``torchrun`` worker.

Under ``torchrun --nproc-per-node N -m ppl_gen ...`` every process runs the same command
(:mod:`ppl_gen.core.distributed`): only rank 0 prints to stdout; errors go to stderr from the
rank that hit them.  A rank whose partner crashed, or froze past the collective timeout
(``PPL_GEN_COLLECTIVE_TIMEOUT``, default 60 s), stops with ``error: rank R of N: ...``
naming what failed (exit status 1) and exits at once, without the interpreter's shutdown,
so that ``torchrun`` stops the job promptly; torchrun reports the crashed rank's own error
(recorded with ``torch.distributed.elastic``'s ``record``).  A successful command ends with
a check that every rank finished, so a rank that froze after its last collective also ends
the job within the timeout instead of leaving it waiting forever (rank 0 waits for the
others, never the reverse: :meth:`~ppl_gen.core.distributed.DistributedContext.finish`).
The process group is left cleanly at exit.
"""

import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from ppl_gen.cli import main
from ppl_gen.core import distributed

#: Exit status of a rank whose peer crashed or froze.
RANK_FAILED = 1

_peer_lost = False


@record
def run() -> int:
    """Run the command line; returns its exit status."""
    global _peer_lost
    if distributed.launched_by_torchrun() and os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (rank 0 alone prints)
    try:
        code = main()
        if code == 0:
            distributed.current("cpu").finish()  # no-op without a process group
        return code
    except distributed.RankFailed as exc:
        _peer_lost = True
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return RANK_FAILED
    finally:
        distributed.teardown()


def _exit(code: int) -> None:
    if _peer_lost:  # skip the interpreter's shutdown (seconds): torchrun stops the job now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(run())
