"""Serve live ``transports`` models on a comm target, to every page through the bridge.

Runs inside the kernel (the ``transports`` library, the standard library and ``comm``; install
``jupyter_transports[transports]``)::

    import transports
    from jupyter_transports.models import serve_target

    session = transports.Session()
    board_id = session.host(board)               # a pydantic model, say
    hub = transports.Server(session)             # or a transports.Hub
    serve_target(hub, "board")                   # pages: transports.Client over …/targets/board

    board.title = "new"; transports.sync(hub)    # push a change made in the kernel

Unlike ``transports.serve_comm`` alone, the client's own handshake is honoured: the bridge passes
the socket's query to the kernel (``metadata.transports.query``), so a client reconnecting with
``?since={model id: revision}`` (the stock ``transports.Client`` does) gets only the patches it
missed, not a new snapshot of every model; and a ``?codec=`` the comm cannot carry (binary ones:
a comm's data is JSON) is refused (the socket closes with 4404) rather than mismatched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from comm import get_comm_manager

from .protocol import METADATA_KEY, QUERY_KEY

JSON_CODEC = "json"


class CommConnection:
    """A comm as a transports connection: each wire goes out as the comm's data."""

    __slots__ = ("comm",)

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def send(self, wire: Any) -> None:
        self.comm.send(data=wire)


def serve_target(server: Any, target_name: str) -> None:
    """Serve ``server`` (a ``transports.Server`` or ``Hub``) to every comm opened to
    ``target_name``."""

    def opened(comm: Any, open_msg: Mapping[str, Any]) -> None:
        query = open_msg.get("metadata", {}).get(METADATA_KEY, {}).get(QUERY_KEY, {})
        codec = query.get("codec", JSON_CODEC)
        if codec != JSON_CODEC:
            comm.close(data={"error": f"codec {codec!r} cannot ride a comm: use json"})
            return
        try:
            since = parse_since(query.get("since"))
        except ValueError as e:
            comm.close(data={"error": str(e)})
            return
        serve(server, comm, since)

    get_comm_manager().register_target(target_name, opened)


def serve(server: Any, comm: Any, since: dict[int, int] | None = None) -> CommConnection:
    """Wire one comm to ``server``: what brings it up to date (the patches after ``since``, else
    a snapshot per model), then every message both ways."""
    connection = CommConnection(comm)
    for wire in server.open(connection, JSON_CODEC, since):
        connection.send(wire)

    def received(msg: Mapping[str, Any]) -> None:
        for target, wires in server.recv(connection, msg["content"]["data"]).items():
            for wire in wires:
                target.send(wire)

    comm.on_msg(received)
    comm.on_close(lambda _msg: server.close(connection))
    return connection


def parse_since(text: str | None) -> dict[int, int] | None:
    """``?since=``'s ``{"model id": revision}`` JSON; :class:`ValueError` if it is not that."""
    if not text:
        return None
    try:
        revisions = json.loads(text)
        return {int(model_id): int(rev) for model_id, rev in revisions.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"since must be a JSON object of model ids to revisions: {e}") from None
