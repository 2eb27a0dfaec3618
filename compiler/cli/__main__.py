"""``python -m onnxc.cli``: the ``onnxc`` command."""
import sys

from onnxc.cli import main

sys.exit(main())
