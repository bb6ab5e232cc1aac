"""The names of the protocols the package speaks, each declared once (standard library only).

Kernels import this module too (through :mod:`.kernel`), so it must never import jupyter_server,
tornado or zmq.
"""

from __future__ import annotations

Buffer = bytes | memoryview  # a comm buffer, as received (a view of a message) or sent

# Jupyter messaging: the message types the bridge sends or reads
COMM_OPEN = "comm_open"
COMM_MSG = "comm_msg"
COMM_CLOSE = "comm_close"
COMM_MSG_TYPES = frozenset({COMM_OPEN, COMM_MSG, COMM_CLOSE})
COMM_INFO_REQUEST = "comm_info_request"
KERNEL_INFO_REQUEST = "kernel_info_request"
STATUS = "status"
SHUTDOWN_REPLY = "shutdown_reply"
CREATE_SUBSHELL_REQUEST = "create_subshell_request"  # JEP 91, on the control channel
DELETE_SUBSHELL_REQUEST = "delete_subshell_request"
SUBSHELLS_FEATURE = "kernel subshells"  # in kernel_info_reply's supported_features
SUBSHELL_ID_HEADER = "subshell_id"  # JEP 91: the subshell a shell message is for
COMM_ID_HEADER = "comm_id"  # the comm a bridge's comm_close ends (read by other servers)

# A kernel's execution_state, as its iopub status messages say it
BUSY = "busy"
STARTING = "starting"
IDLE = "idle"  # also: the status that ends a request's handling

# metadata["transports"] on comm messages
METADATA_KEY = "transports"
CLIENT_KEY = "client"  # bridge -> kernel: the id of the client that spoke
USER_KEY = "user"  # bridge -> kernel: its user's name
QUERY_KEY = "query"  # bridge -> kernel, on comm_open: the socket's query parameters
TO_KEY = "to"  # kernel -> bridge: the only clients that receive this message
SENT_KEY = "sent"  # kernel -> bridge: how many messages the kernel has sent on this comm so far
