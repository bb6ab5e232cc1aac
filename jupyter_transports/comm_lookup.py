"""Which comms a kernel has, for a bridge that has not seen them all open: asked of the kernel
(``comm_info_request``) as seldom as will do.

Callers that ask while a request is out share its answer (a busy kernel answers none until its
cell ends, and each caller would otherwise cost it a request then), and the kernel's "no such
comm" holds for a moment per comm id. Per id only: another server on a gateway kernel may open
a comm at any time, and this server does not see it open.

A bridge that replaces an idle one is given the comms its predecessor knew (a comm opened over
REST has no socket to keep the bridge open): believed at once, so that calls on them need not
wait for a busy kernel, and confirmed by the kernel's next answer, which drops those it lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .errors import CommNotFound, KernelFault
from .protocol import COMM_INFO_REQUEST
from .router import Comm, Router

MISSING_FOR = 1.0  # seconds a comm the kernel said it lacks is taken as absent without asking
MISSING_MAX = 1024  # absent ids remembered before the expired ones are let go

Request = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class CommLookup:
    """A kernel's comms, as its bridge's router knows them and the kernel tells."""

    def __init__(self, router: Router, request: Request) -> None:
        self.router = router  # learns each comm the kernel lists
        self.request = request  # a shell request to the kernel, awaiting its reply
        self._asking: asyncio.Future[dict[str, Any]] | None = None
        self._missing: dict[str, float] = {}  # comm id -> loop time until it counts as absent
        self.unconfirmed: set[str] = set()  # remembered from an earlier bridge, not yet listed

    def remember(self, comms: Mapping[str, Comm]) -> None:
        """Believe the kernel has these comms (an earlier bridge's, without their clients)
        until it answers otherwise."""
        for comm_id, comm in comms.items():
            self.router.comms.setdefault(comm_id, comm)
        self.unconfirmed.update(comms)

    async def confirm(self) -> None:
        """Ask the kernel about the remembered comms (the answer drops those it lacks); if it
        does not answer, they stay believed."""
        if self.unconfirmed:
            with contextlib.suppress(KernelFault):
                await self.refresh()

    async def require(self, comm_id: str, user: str | None = None) -> None:
        """:class:`CommNotFound` unless the kernel has this comm (and ``user``, if given, may
        use it: private comms)."""
        if user is not None and not self.router.may_use(comm_id, user):
            raise CommNotFound(f"no comm {comm_id} in this kernel")
        if comm_id in self.router.comms:
            return
        loop = asyncio.get_running_loop()
        if self._missing.get(comm_id, 0.0) > loop.time():
            raise CommNotFound(f"no comm {comm_id} in this kernel")
        if comm_id not in await self.refresh():
            if len(self._missing) >= MISSING_MAX:
                self._missing = {c: t for c, t in self._missing.items() if t > loop.time()}
            self._missing[comm_id] = loop.time() + MISSING_FOR
            raise CommNotFound(f"no comm {comm_id} in this kernel")

    async def refresh(self) -> dict[str, Any]:
        """Ask the kernel which comms it has (or share the answer to a request already out)."""
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._ask())
            self._asking.add_done_callback(self._answered)
        return await asyncio.shield(self._asking)

    async def _ask(self) -> dict[str, Any]:
        reply = await self.request(COMM_INFO_REQUEST, {})
        comms: dict[str, Any] = reply["content"].get("comms", {})
        for comm_id, info in comms.items():
            self.router.comm_exists(comm_id, info.get("target_name", ""))
            self._missing.pop(comm_id, None)
        for comm_id in self.unconfirmed.difference(comms):
            self.router.comm_absent(comm_id)
        self.unconfirmed.clear()
        return comms

    def _answered(self, _: object) -> None:
        self._asking = None
