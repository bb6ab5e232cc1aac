"""URL patterns of the extension (under the server's ``base_url``)."""

from __future__ import annotations

from .websocket import AUTH_RESOURCE, AttachHandler, NewCommHandler

KERNEL = r"/api/transports/kernels/(?P<kernel_id>[\w-]+)"

default_handlers = [
    (KERNEL + r"/targets/(?P<target_name>[^/]+)", NewCommHandler),
    (KERNEL + r"/comms/(?P<comm_id>[^/]+)", AttachHandler),
]

__all__ = ["AUTH_RESOURCE", "default_handlers"]
