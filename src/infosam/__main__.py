"""``python -m infosam``: the same as the ``infosam`` command (handy under ``torchrun`` and ``accelerate launch``)."""

import sys

from infosam.cli import main

sys.exit(main())
