"""``python -m ferlib <command> …`` (see :mod:`ferlib.cli`)."""
import sys

from ferlib.cli import main

sys.exit(main())
