"""``python -m jupyter_transports.cli``, the same as ``jupyter transports``."""

from . import main

main()
