"""``python -m ys_platform.cli``: the same as the ``ys-platform`` script."""

import sys

from ys_platform.cli import main

sys.exit(main())
