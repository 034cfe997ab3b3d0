"""``python -m onebit``: the command line, with :func:`onebit.cli.main`'s return value as the exit code."""

import sys

from onebit.cli import main

sys.exit(main())
