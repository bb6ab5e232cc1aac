"""A comm that many clients share: who is on it, late joiners, and edits seen by everyone.

Runs inside the kernel, so it imports only the standard library and ``comm``::

    from jupyter_transports.shared import SharedComm

    board = SharedComm("board", echo=True)   # opens a comm of target "board"; pages attach to
    state = {"text": ""}                     # …/comms/{board.comm_id}

    @board.on_join
    def welcome(member):                     # a late joiner gets the state, the others nothing
        board.send(state, to=[member["client"]])

    @board.on_msg
    def edited(data, buffers, sender):       # with echo, the other pages saw it already
        state.update(data)

    board.members                            # {client id: {"user", "name", "role", …}}

The comm opts in to presence (and, with ``echo=True``, to echo between clients) on its
``comm_open`` and on every message it sends (``metadata.transports``). A server whose bridge to
the kernel began after the comm opened asks the kernel for its comms (``comm_info_request``)
when a client attaches to it; in an ipykernel, every live ``SharedComm`` then says its opt-ins
again first (:meth:`announce`, a message that reaches nobody). See ``docs/CONTRACT.md``, v2,
"Presence and echo".
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from comm import create_comm

from .protocol import CLIENT_KEY, COMM_CLOSE, COMM_INFO_REQUEST, METADATA_KEY, TO_KEY

MEMBER_KEY = "member"
PRESENCE_KEY = "presence"

_LIVE: weakref.WeakSet[SharedComm] = weakref.WeakSet()  # announced at each comm_info_request

Member = dict[str, Any]
MemberHandler = Callable[[Member], Any]
MessageHandler = Callable[[Any, list[bytes], "str | None"], Any]


class SharedComm:
    """A comm the kernel opens for every client that attaches to it."""

    def __init__(
        self, target_name: str, data: Any = None, *, presence: bool = True, echo: bool = False
    ) -> None:
        self.flags = {PRESENCE_KEY: presence, "echo": echo}
        self.members: dict[str, Member] = {}  # by client id, in the order they joined
        self._on_join: list[MemberHandler] = []
        self._on_leave: list[MemberHandler] = []
        self._on_msg: list[MessageHandler] = []
        self.comm = create_comm(
            target_name=target_name, data={} if data is None else data, metadata=self._metadata()
        )
        self.comm.on_msg(self._received)
        _LIVE.add(self)
        _announce_on_comm_info()
        _stay_open_when_a_frontend_declines()

    @property
    def comm_id(self) -> str:
        return str(self.comm.comm_id)

    def send(
        self, data: Any, buffers: list[bytes] | None = None, to: Iterable[str] | None = None
    ) -> None:
        """Send to every client on the comm, or only to the client ids in ``to``."""
        self.comm.send(data, metadata=self._metadata(to), buffers=buffers)

    def announce(self) -> None:
        """Say the comm's opt-ins again, to nobody (for a server that missed the open)."""
        self.comm.send({}, metadata=self._metadata(()))

    def on_join(self, handler: MemberHandler) -> MemberHandler:
        """Call ``handler(member)`` when a client attaches (usable as a decorator)."""
        self._on_join.append(handler)
        return handler

    def on_leave(self, handler: MemberHandler) -> MemberHandler:
        """Call ``handler(member)`` when a client leaves."""
        self._on_leave.append(handler)
        return handler

    def on_msg(self, handler: MessageHandler) -> MessageHandler:
        """Call ``handler(data, buffers, sender)`` for each client message (``sender``: its
        client id)."""
        self._on_msg.append(handler)
        return handler

    def close(self) -> None:
        _LIVE.discard(self)
        self.comm.close()

    def _metadata(self, to: Iterable[str] | None = None) -> dict[str, Any]:
        transports: dict[str, Any] = dict(self.flags)
        if to is not None:
            transports[TO_KEY] = list(to)
        return {METADATA_KEY: transports}

    def _received(self, msg: Mapping[str, Any]) -> None:
        transports = msg.get("metadata", {}).get(METADATA_KEY, {})
        event, member = transports.get(PRESENCE_KEY), transports.get(MEMBER_KEY)
        if event == "join" and isinstance(member, dict):
            self.members[member["client"]] = member
            for handler in self._on_join:
                handler(member)
        elif event == "leave" and isinstance(member, dict):
            self.members.pop(member["client"], None)
            for handler in self._on_leave:
                handler(member)
        else:
            data, buffers = msg["content"].get("data"), list(msg.get("buffers") or [])
            for message_handler in self._on_msg:
                message_handler(data, buffers, transports.get(CLIENT_KEY))


def _shell_handlers() -> dict[str, Any] | None:
    """The running ipykernel's shell handlers (None in another kernel, or outside one)."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:  # pragma: no cover - another kernel
        return None
    return Kernel.instance().shell_handlers if Kernel.initialized() else None


def _stay_open_when_a_frontend_declines() -> None:
    """A frontend on the kernel's ``/channels`` (JupyterLab, a notebook) closes every comm the
    kernel opens to a target it does not know, as the messaging protocol tells it to, and would
    close every SharedComm under the clients of jupyter_transports. A comm_close of a live
    SharedComm without ``metadata.transports`` (which every close of the server carries) is
    therefore ignored. Installed once per kernel."""
    handlers = _shell_handlers()
    original = handlers.get(COMM_CLOSE) if handlers is not None else None
    if handlers is None or original is None or getattr(original, "keeps_shared", False):
        return

    def closing(stream: Any, ident: Any, msg: Mapping[str, Any]) -> Any:
        comm_id = msg.get("content", {}).get("comm_id")
        if METADATA_KEY not in (msg.get("metadata") or {}) and any(
            shared.comm_id == comm_id for shared in list(_LIVE)
        ):
            logging.getLogger(__name__).info(
                "A frontend declined shared comm %s (a target it does not know): kept open for "
                "the clients of jupyter_transports",
                comm_id,
            )
            return None
        return original(stream, ident, msg)

    closing.keeps_shared = True  # type: ignore[attr-defined]
    handlers[COMM_CLOSE] = closing


def _announce_on_comm_info() -> None:
    """Make the kernel's comm_info_request handler announce every live SharedComm first (once
    per kernel; nothing in a kernel that is not an ipykernel)."""
    handlers = _shell_handlers()
    original = handlers.get(COMM_INFO_REQUEST) if handlers is not None else None
    if handlers is None or original is None or getattr(original, "announces", False):
        return

    def announcing(*args: Any, **kwargs: Any) -> Any:
        for shared in list(_LIVE):
            shared.announce()
        return original(*args, **kwargs)

    announcing.announces = True  # type: ignore[attr-defined]
    handlers[COMM_INFO_REQUEST] = announcing
