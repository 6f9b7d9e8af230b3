"""``python -m autoscaler.cli``: the same as the ``queue-autoscaler`` command."""

import sys

from autoscaler.cli import main

sys.exit(main())
