"""Which socket sees which comm message: the routing table of one kernel (pure, no I/O).

Events come in as method calls (a client opens, attaches, sends, leaves; the kernel sends a comm
message; the kernel goes away); what the I/O side must do comes back as a list of actions.

A *subscriber* is one client's presence on one comm: a socket, an event stream, a REST call.

Rules, in plain words:

1. A client is attached to exactly one comm. A comm has at most one owner: the client whose
   socket opened it. Comms the kernel opened have none and outlive every client.
2. A comm message from the kernel reaches every client attached to that comm, once; if its
   metadata holds ``transports.to``, only the listed clients among them. Nothing else the kernel
   sends reaches any client. Each such message gets the next number of its comm's sequence
   (1, 2, 3, …), whoever receives it: durable sessions resume from it.
3. Every message sent to the kernel on a client's behalf carries ``metadata.transports`` with the
   client's id and user, so the kernel knows who spoke.
4. When a comm ends, every client attached to it is closed, and forgotten at once: a ``Close``
   action is the router's last word about that client.
5. A ``comm_close`` from the kernel in answer to the ``comm_open`` (its parent) is a refusal.
   A comm closed through another server on the same kernel ends as if the kernel closed it.
6. A client may also send one message without attaching (a REST call) and collect the kernel's
   replies to it: the comm messages whose parent is that message (and, if ``transports.to`` is
   set, that name it), at most the number it asked for. Its collection ends with a ``Close``, as
   for any client: when the count is reached, or when the comm or the kernel goes away.
7. A comm whose kernel opted in tells the kernel, and the clients that asked, who joins and
   leaves it; and relays what a client sends to its other clients (see :mod:`.presence`).
8. With ``private`` comms, a comm a user opened through this server is that user's: another
   user can neither attach to it nor send on it (as if it did not exist), unless the kernel
   marks it shared (``metadata.transports.shared``). Comms the kernel opened are everyone's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import presence
from .actions import Action, Close, Deliver, Lost, Opened, Presence, ToKernel
from .errors import CloseCode, CommExists, CommNotFound, ReadOnly
from .framing import Buffers, OutgoingFrame
from .kernel_message import KernelCommMessage, addressees, opted, sent_number, transports_of
from .presence import ECHO_KEY, NO_IDENTITY, PRESENCE_KEY, SHARED_KEY, Identity
from .protocol import (
    CLIENT_KEY,
    COMM_CLOSE,
    COMM_MSG,
    COMM_OPEN,
    METADATA_KEY,
    QUERY_KEY,
    USER_KEY,
)

CLOSED_BY_KERNEL = "comm closed by the kernel"
CLOSED_BY_OWNER = "comm closed by the client that opened it"
CLOSED_BY_REQUEST = "comm closed by request"
CLOSED_ELSEWHERE = "comm closed through another server"
REFUSED_BY_KERNEL = "the kernel refused the comm"
REPLIES_COMPLETE = "every expected reply arrived"


@dataclass(frozen=True)
class Subscriber:
    """One client on one comm: a socket, an event stream or a REST call."""

    id: str
    comm_id: str
    user: str
    can_send: bool = True
    identity: Identity = NO_IDENTITY

    def member(self) -> dict[str, Any]:
        return presence.member(self.id, self.user, self.identity, self.can_send)


@dataclass
class Collector:
    """A client waiting for the replies to one message it sent (rule 6)."""

    client: Subscriber
    remaining: int


@dataclass
class Comm:
    """A comm the bridge knows about, and who is attached to it (insertion-ordered)."""

    id: str
    target_name: str
    owner: str | None = None
    clients: dict[str, Subscriber] = field(default_factory=dict)
    collectors: dict[str, Collector] = field(default_factory=dict)  # by parent msg id
    seq: int = 0  # the last comm message routed from the kernel
    sent: int = 0  # the kernel's own count of its messages on this comm, when it numbers them
    presence: bool = False  # the kernel opted in: it hears of joins and leaves
    opener: str | None = None  # the user who opened it through this server
    shared: bool = False  # the kernel let other users than its opener on it (private comms)
    echo: bool = False  # the kernel opted in: what a client sends reaches the others too

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class Router:
    """The routing table of one kernel's comms."""

    def __init__(self, *, private: bool = False) -> None:
        self.comms: dict[str, Comm] = {}
        self.clients: dict[str, Subscriber] = {}
        self.private = private  # comms belong to the user who opened them (rule 8)

    def may_use(self, comm_id: str, user: str) -> bool:
        """Whether ``user`` may see, attach to and send on the comm (rule 8)."""
        comm = self.comms.get(comm_id)
        return not self.private or comm is None or comm.opener in (None, user) or comm.shared

    # -- clients -----------------------------------------------------------------------------

    def open_comm(
        self,
        client: Subscriber,
        target_name: str,
        data: Any,
        query: Mapping[str, str],
        *,
        owned: bool = True,
        metadata: Mapping[str, Any] | None = None,
        buffers: Buffers = (),
    ) -> list[Action]:
        """``client`` opens a new comm (``client.comm_id``) to ``target_name``, its comm_open
        carrying ``metadata`` (the client's, beside the server's own key) and ``buffers``.

        An ``owned`` comm ends when its client leaves (a socket's); otherwise it outlives the
        client, as a comm the kernel opened does (a REST call's).
        """
        if client.comm_id in self.comms:  # an id the client chose (a multiplexed socket's)
            raise CommExists(f"a comm {client.comm_id} exists")
        comm = Comm(
            client.comm_id, target_name, owner=client.id if owned else None, opener=client.user
        )
        self.comms[comm.id] = comm
        self._add(comm, client)
        ours = _metadata(client)
        ours[METADATA_KEY][QUERY_KEY] = dict(query)
        content = {"comm_id": comm.id, "target_name": target_name, "data": data}
        sent = {**(metadata or {}), **ours}
        return [ToKernel(COMM_OPEN, content, sent, buffers, target_name=target_name)]

    def attach(self, client: Subscriber) -> list[Action]:
        """``client`` starts receiving the messages of an existing comm."""
        comm = self.comms.get(client.comm_id)
        if comm is None or not self.may_use(comm.id, client.user):
            raise CommNotFound(f"no comm {client.comm_id}")
        return self._add(comm, client)

    def send(self, client_id: str, data: Any, buffers: Buffers = ()) -> list[Action]:
        """A client sends a message on its comm."""
        client = self.clients.get(client_id)
        if client is None:
            return []  # already closed: its last frames are dropped with its socket
        return self._message(client, data, buffers)

    def post(self, client: Subscriber, data: Any, buffers: Buffers = ()) -> list[Action]:
        """One message from a client that is not attached to the comm (a REST call)."""
        if client.comm_id not in self.comms or not self.may_use(client.comm_id, client.user):
            raise CommNotFound(f"no comm {client.comm_id}")
        return self._message(client, data, buffers)

    def _message(self, client: Subscriber, data: Any, buffers: Buffers) -> list[Action]:
        if not client.can_send:
            raise ReadOnly("this client may only receive")
        comm = self.comms[client.comm_id]
        content = {"comm_id": comm.id, "data": data}
        actions: list[Action] = [
            ToKernel(COMM_MSG, content, _metadata(client), buffers, comm.target_name)
        ]
        if comm.echo and (others := tuple(c for c in comm.clients if c != client.id)):
            # relayed now, so in the order the kernel receives them
            frame = OutgoingFrame(data, buffers, comm.next_seq(), sender=client.id)
            actions.append(Deliver(others, frame, comm.id, broadcast=False))
        return actions

    def expect_replies(self, client: Subscriber, parent_msg_id: str, count: int) -> None:
        """``client`` collects at most ``count`` (> 0) replies to the message ``parent_msg_id``."""
        comm = self.comms.get(client.comm_id)
        if comm is None:
            raise CommNotFound(f"no comm {client.comm_id}")
        comm.collectors[parent_msg_id] = Collector(client, count)
        self.clients[client.id] = client

    def leave(self, client_id: str) -> list[Action]:
        """A client went away; if it owned its comm, the comm ends too."""
        client = self.clients.pop(client_id, None)
        if client is None:
            return []
        comm = self.comms[client.comm_id]
        if comm.clients.pop(client_id, None) is None:
            _forget_collector(comm, client_id)
            return []
        if comm.owner != client_id:
            if not comm.presence:
                return []
            return [
                presence.kernel_event(comm, presence.LEAVE, client.member()),
                Presence(comm.id, tuple(comm.clients), presence.leave_event(client_id)),
            ]
        del self.comms[comm.id]
        return [_closing(comm, _metadata(client)), *self._close_all(comm, CLOSED_BY_OWNER)]

    def close_comm(self, comm_id: str, reason: str = CLOSED_BY_REQUEST) -> list[Action]:
        """Close a comm on behalf of the server (not of one client)."""
        comm = self.comms.pop(comm_id, None)
        if comm is None:
            raise CommNotFound(f"no comm {comm_id}")
        return [_closing(comm), *self._close_all(comm, reason)]

    def roster(self, comm_id: str) -> dict[str, Any] | None:
        """The roster frame of a comm whose kernel opted in to presence, else None."""
        comm = self.comms.get(comm_id)
        return presence.roster_of(comm) if comm is not None and comm.presence else None

    def subscribers(self, comm_id: str) -> int:
        """How many clients are attached to a comm (0 for a comm the router does not know)."""
        comm = self.comms.get(comm_id)
        return len(comm.clients) if comm is not None else 0

    # -- kernel ------------------------------------------------------------------------------

    def comm_exists(self, comm_id: str, target_name: str) -> None:
        """The kernel has this comm (it opened it, or said so in a ``comm_info_reply``)."""
        comm = self.comms.setdefault(comm_id, Comm(comm_id, target_name))
        comm.target_name = comm.target_name or target_name  # known from an opt-in before

    def comm_absent(self, comm_id: str) -> None:
        """The kernel said it lacks a comm believed open: forget it, unless clients are on it
        (then the kernel's comm_close, or their own close, ends it)."""
        comm = self.comms.get(comm_id)
        if comm is not None and not comm.clients:
            del self.comms[comm_id]

    def from_kernel(self, message: KernelCommMessage) -> list[Action]:
        """A comm message arrived on the kernel's iopub channel."""
        msg_type, content, metadata, buffers, parent_msg_type, parent_msg_id = message
        comm_id: str = content.get("comm_id", "")
        if msg_type == COMM_OPEN:
            target_name = content.get("target_name", "")
            self.comm_exists(comm_id, target_name)
            opened = Opened(comm_id, target_name, content.get("data"), metadata, buffers)
            return [*self._opt_in(self.comms[comm_id], metadata), opened]
        comm = self.comms.get(comm_id)
        if comm is None and msg_type == COMM_MSG and presence.opts_in(metadata):
            # a comm this server did not see open, opting in (just before its comm_info_reply)
            comm = self.comms[comm_id] = Comm(comm_id, "")
        if comm is None:
            return []
        if msg_type == COMM_MSG:
            first = [*self._opt_in(comm, metadata), *_count_lost(comm, metadata)]
            to = addressees(metadata)
            recipients, done = self._reply_recipients(comm, to, parent_msg_id)
            if not recipients:
                return first
            frame = OutgoingFrame(content.get("data"), buffers, comm.next_seq())
            return [*first, Deliver(recipients, frame, comm_id, to is None), *done]
        if msg_type == COMM_CLOSE:
            del self.comms[comm_id]
            if parent_msg_type == COMM_OPEN:
                return self._close_all(comm, REFUSED_BY_KERNEL, CloseCode.NO_SUCH_COMM)
            actions: list[Action] = []
            data = content.get("data")
            if data or buffers:
                to = addressees(metadata)
                recipients, done = self._reply_recipients(comm, to, parent_msg_id)
                if recipients:
                    frame = OutgoingFrame(data, buffers, comm.next_seq())
                    actions += [Deliver(recipients, frame, comm_id, to is None), *done]
            return actions + self._close_all(comm, CLOSED_BY_KERNEL)
        return []

    def closed_elsewhere(self, comm_id: str) -> list[Action]:
        """Another server on this kernel closed the comm (the kernel says nothing of it)."""
        comm = self.comms.pop(comm_id, None)
        return [] if comm is None else self._close_all(comm, CLOSED_ELSEWHERE)

    def kernel_gone(self, code: CloseCode, reason: str) -> list[Action]:
        """The kernel restarted, shut down or died: every comm is gone with it."""
        actions: list[Action] = [Close(client_id, code, reason) for client_id in self.clients]
        self.comms.clear()
        self.clients.clear()
        return actions

    def server_stopping(self, reason: str) -> list[Action]:
        """The server stops: close the comms clients opened in the kernel, then every client."""
        actions: list[Action] = [
            _closing(comm) for comm in self.comms.values() if comm.owner is not None
        ]
        return actions + self.kernel_gone(CloseCode.GOING_AWAY, reason)

    # -- helpers -----------------------------------------------------------------------------

    def _add(self, comm: Comm, client: Subscriber) -> list[Action]:
        comm.clients[client.id] = client
        self.clients[client.id] = client
        if not comm.presence:
            return []
        others = tuple(c for c in comm.clients if c != client.id)
        return [
            presence.kernel_event(comm, presence.JOIN, client.member()),
            Presence(comm.id, others, presence.join_event(client.member())),
            Presence(comm.id, (client.id,), presence.roster_of(comm)),
        ]

    def _opt_in(self, comm: Comm, metadata: Mapping[str, Any]) -> list[Action]:
        """What the kernel says of presence and echo on ``comm``; when presence begins, the
        kernel hears of every client attached already, and they of each other."""
        if not transports_of(metadata):  # most messages say nothing
            return []
        if (echo := opted(metadata, ECHO_KEY)) is not None:
            comm.echo = echo
        if (shared := opted(metadata, SHARED_KEY)) is not None:
            comm.shared = shared
        turned = opted(metadata, PRESENCE_KEY)
        if turned is None or turned == comm.presence:
            return []
        comm.presence = turned
        if not turned or not comm.clients:
            return []
        joins: list[Action] = [
            presence.kernel_event(comm, presence.JOIN, c.member()) for c in comm.clients.values()
        ]
        return [*joins, Presence(comm.id, tuple(comm.clients), presence.roster_of(comm))]

    def _reply_recipients(
        self, comm: Comm, to: Mapping[str, None] | None, parent_msg_id: str | None
    ) -> tuple[tuple[str, ...], list[Action]]:
        """Who receives a kernel message on ``comm`` (addressed ``to`` some of its clients, if
        not None), and the collections it completes."""
        recipients = _recipients(comm, to)
        collector = comm.collectors.get(parent_msg_id) if parent_msg_id else None
        if collector is None or (to is not None and collector.client.id not in to):
            return recipients, []
        collector.remaining -= 1
        recipients += (collector.client.id,)
        if collector.remaining > 0:
            return recipients, []
        del comm.collectors[parent_msg_id]  # type: ignore[arg-type]
        del self.clients[collector.client.id]
        return recipients, [Close(collector.client.id, CloseCode.COMM_CLOSED, REPLIES_COMPLETE)]

    def _close_all(
        self, comm: Comm, reason: str, code: CloseCode = CloseCode.COMM_CLOSED
    ) -> list[Action]:
        ended = [*comm.clients, *(c.client.id for c in comm.collectors.values())]
        comm.collectors.clear()
        for client_id in ended:
            del self.clients[client_id]
        return [Close(client_id, code, reason) for client_id in ended]


def _closing(comm: Comm, metadata: dict[str, Any] | None = None) -> ToKernel:
    """The comm_close that ends ``comm`` in the kernel: with the client's ``metadata`` if a
    client's leaving closes it, else an empty ``metadata.transports``, so that the kernel tells
    it from a frontend's on ``/channels`` (which declines a comm of a target it does not know)."""
    content = {"comm_id": comm.id, "data": {}}
    metadata = metadata or {METADATA_KEY: {}}
    return ToKernel(COMM_CLOSE, content, metadata, target_name=comm.target_name)


def _metadata(client: Subscriber) -> dict[str, Any]:
    return {METADATA_KEY: {CLIENT_KEY: client.id, USER_KEY: client.user}}


def _recipients(comm: Comm, to: Iterable[str] | None) -> tuple[str, ...]:
    if to is None:
        return tuple(comm.clients)
    return tuple(client_id for client_id in to if client_id in comm.clients)


def _forget_collector(comm: Comm, client_id: str) -> None:
    for parent_msg_id, collector in comm.collectors.items():
        if collector.client.id == client_id:
            del comm.collectors[parent_msg_id]
            return


def _count_lost(comm: Comm, metadata: Mapping[str, Any]) -> list[Action]:
    """A gap in the numbers the kernel gives its messages on ``comm`` (``transports.sent``):
    those never reached the server (ZMQ dropped them). Counted from the first number seen."""
    sent = sent_number(metadata)
    if sent is None:
        return []
    missing = sent - comm.sent - 1 if comm.sent else 0
    comm.sent = max(comm.sent, sent)
    return [Lost(comm.id, missing)] if missing > 0 else []
