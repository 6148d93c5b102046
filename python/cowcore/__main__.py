"""``python -m cowcore``: the same as the ``cowcore`` command."""

import sys

from cowcore.cli import main

sys.exit(main())
