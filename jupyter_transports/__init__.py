"""jupyter_transports: kernel comms for any web app, routed by the Jupyter server."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import TransportsExtension

    return [{"module": "jupyter_transports", "app": TransportsExtension}]
