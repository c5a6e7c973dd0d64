"""`python -m seg <command>`: the same as the `seg` console script."""

import sys

from seg.cli import main

sys.exit(main())
