"""``python -m ppl_gen`` runs the ``ppl-gen`` command line."""

import sys

from ppl_gen.cli import main

sys.exit(main())
