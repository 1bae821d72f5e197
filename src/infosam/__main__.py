"""``python -m infosam``: the same as the ``infosam`` command (handy under ``torchrun -m infosam``)."""

import sys

from infosam.cli import main

sys.exit(main())
