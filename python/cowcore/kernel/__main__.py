"""Standalone entry point.

``python -m cowcore.kernel run FILE... --kernel VMLINUZ`` and
``python -m cowcore.kernel fetch [--kernels DIR]``.
"""

import sys

from cowcore.kernel.cli import main

sys.exit(main())
