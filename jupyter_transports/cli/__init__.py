"""``jupyter transports``: kernel comms from a terminal, through a Jupyter server.

    jupyter transports list                         kernels, their comms, targets and clients
    jupyter transports tail KERNEL_ID COMM_ID       follow a comm's messages
    jupyter transports send KERNEL_ID COMM_ID DATA  send one message (REST), print the replies
    jupyter transports open KERNEL_ID TARGET        open a comm; stdin lines go to it

The console script ``jupyter-transports`` is :func:`main`, which jupyter's dispatcher finds.
"""

from __future__ import annotations

from .app import TransportsApp, main

__all__ = ["TransportsApp", "main"]
