"""Who is on a comm, and echo between its clients: the comms whose kernel opted in (pure).

A comm's kernel opts in by sending, on a ``comm_open`` or ``comm_msg``, ``metadata.transports``
with ``"presence": true`` and/or ``"echo": true`` (``false`` opts out again); a message that only
opts in can address nobody (``"to": []``). Then (contract v2, "Presence and echo"):

* **presence**: the kernel gets a ``comm_msg`` from the server each time a client attaches to or
  leaves the comm (and, at opt-in, one per client attached already), in that order, with
  ``metadata.transports.presence`` ``"join"`` or ``"leave"`` and the client's :func:`member`
  entry; clients that asked for it (durable sessions with ``presence=1``) get the roster, then
  its changes, as control frames;
* **echo**: what a client sends on the comm also reaches the comm's other clients, in the order
  the kernel receives it, saying who sent it.

A comm that did not opt in sees nothing new, and neither do its clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .actions import ToKernel
from .kernel_message import opted
from .protocol import COMM_MSG, METADATA_KEY

PRESENCE_KEY = "presence"  # in metadata.transports, and in the frames about the roster
ECHO_KEY = "echo"
SHARED_KEY = "shared"  # with private comms: other users than the opener may use it
MEMBER_KEY = "member"  # server -> kernel: the client who joined or left
JOIN = "join"
LEAVE = "leave"
ROSTER = "roster"
EDITOR = "editor"  # may send
OBSERVER = "observer"  # may only receive


@dataclass(frozen=True)
class Identity:
    """What jupyter_server's identity provider says of a user besides the username (never what a
    client claims)."""

    name: str = ""  # display name
    initials: str | None = None
    color: str | None = None


NO_IDENTITY = Identity()


def member(client_id: str, user: str, identity: Identity, can_send: bool) -> dict[str, Any]:
    """A client as the kernel and the roster see it."""
    return {
        "client": client_id,
        "user": user,
        "name": identity.name or user,
        "initials": identity.initials,
        "color": identity.color,
        "role": EDITOR if can_send else OBSERVER,
    }


def opts_in(metadata: Mapping[str, Any]) -> bool:
    """Whether a kernel message opts its comm in to presence or echo."""
    return bool(opted(metadata, PRESENCE_KEY) or opted(metadata, ECHO_KEY))


def roster_event(members: list[dict[str, Any]]) -> dict[str, Any]:
    return {PRESENCE_KEY: ROSTER, "clients": members}


def join_event(entry: dict[str, Any]) -> dict[str, Any]:
    return {PRESENCE_KEY: JOIN, "client": entry}


def leave_event(client_id: str) -> dict[str, Any]:
    return {PRESENCE_KEY: LEAVE, "client": client_id}


def apply(roster: dict[str, dict[str, Any]], event: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``roster`` (members by client id) after a roster frame from the server."""
    kind, client = event.get(PRESENCE_KEY), event.get("client")
    if kind == ROSTER and isinstance(event.get("clients"), list):
        return {m["client"]: m for m in event["clients"] if isinstance(m, dict) and "client" in m}
    if kind == JOIN and isinstance(client, dict) and isinstance(client.get("client"), str):
        return {**roster, client["client"]: client}
    if kind == LEAVE and isinstance(client, str):
        return {c: m for c, m in roster.items() if c != client}
    return roster


class Member(Protocol):
    def member(self) -> dict[str, Any]: ...


class SharedComm(Protocol):
    """What of the router's comm the helpers here read."""

    id: str
    target_name: str

    @property
    def clients(self) -> Mapping[str, Member]: ...


def kernel_event(comm: SharedComm, kind: str, member: dict[str, Any]) -> ToKernel:
    """The comm_msg that tells the kernel a client joined or left ``comm``."""
    metadata = {METADATA_KEY: {PRESENCE_KEY: kind, MEMBER_KEY: member}}
    content = {"comm_id": comm.id, "data": {}}
    return ToKernel(COMM_MSG, content, metadata, target_name=comm.target_name)


def roster_of(comm: SharedComm) -> dict[str, Any]:
    """The roster frame of ``comm``: every member, in the order they attached."""
    return roster_event(members(comm.clients.values()))


def members(clients: Iterable[Member]) -> list[dict[str, Any]]:
    return [client.member() for client in clients]
