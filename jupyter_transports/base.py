"""What every handler of the extension shares: the app's parts, the checks of a request, and
how its faults are answered and logged (never with the request's secrets)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.log import app_log, gen_log

from .errors import TransportsError
from .limits import SocketLimits
from .manager import BridgeManager
from .presence import Identity
from .router import Subscriber
from .sessions import SessionStore

AUTH_RESOURCE = "kernels"
EXECUTE = "execute"
READ = "read"
TOKEN_PARAM = "token"
DATA_PARAM = "data"
FRAMES_PARAM = "frames"
SESSION_PARAM = "session_key"  # with "key" in its name, jupyter_server scrubs it from logs
LAST_PARAM = "last"
PRESENCE_PARAM = "presence"  # a session's "1": tell me who is on the comm
UNSEEN_PARAMS = frozenset({TOKEN_PARAM, SESSION_PARAM, LAST_PARAM, PRESENCE_PARAM})  # by the kernel
SECRET_PARAM = re.compile(r"([?&][^=&#]*(?:token|key)[^=&#]*=)[^&#]*")  # as jupyter_server's log


LOGGED_URI_CHARS = 1024  # of a URI, in a log line


def scrub_secrets(uri: str) -> str:
    """``uri`` with the values of its secret parameters replaced."""
    return SECRET_PARAM.sub(r"\1[secret]", uri)


def shortened(uri: str) -> str:
    """``uri``, cut to ``LOGGED_URI_CHARS`` for a log line (a refused query may be 64 KB)."""
    if len(uri) <= LOGGED_URI_CHARS:
        return uri
    return f"{uri[:LOGGED_URI_CHARS]}…({len(uri)} characters)"


class TransportsHandlerMixin(ExtensionHandlerMixin):
    """What every handler of the extension reads from the app."""

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """As tornado logs a request's faults, but with its URI's secrets (the token, a session
        key) scrubbed, as jupyter_server's access log scrubs them."""
        request = self.request  # type: ignore[attr-defined]
        summary = f"{request.method} {shortened(scrub_secrets(request.uri))} ({request.remote_ip})"
        if isinstance(value, web.HTTPError):
            if message := value.get_message():
                gen_log.warning("%d %s: %s", value.status_code, summary, message)
        else:
            app_log.error("Uncaught exception %s", summary, exc_info=(typ, value, tb))  # type: ignore[arg-type]

    @property
    def bridges(self) -> BridgeManager:
        return self.extensionapp.bridges  # type: ignore[attr-defined,no-any-return]

    @property
    def sessions(self) -> SessionStore:
        return self.extensionapp.sessions  # type: ignore[attr-defined,no-any-return]

    @property
    def socket_limits(self) -> SocketLimits:
        return self.extensionapp.socket_limits  # type: ignore[attr-defined,no-any-return]

    async def check_kernel(self, kernel_id: str) -> None:
        """404 for an unknown kernel (a gateway kernel of another server's is adopted)."""
        with self.http_errors():
            found = await self.bridges.find_kernel(kernel_id)
        if not found:
            raise web.HTTPError(404, f"no kernel {kernel_id}")

    def check_target(self, target_name: str) -> None:
        allowed = self.extensionapp.allowed_targets  # type: ignore[attr-defined]
        if allowed is not None and target_name not in allowed:
            raise web.HTTPError(403, f"comm target {target_name!r} is not allowed")

    @staticmethod
    def check_open_data(data: Any) -> Any:
        """The data of a new comm's comm_open must be a JSON object."""
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the data of a new comm must be a JSON object")
        return data

    def comm_open_query(self) -> dict[str, str]:
        """The query parameters the kernel sees in the comm_open: all but the secrets (the token,
        a session key) and a session's ``last``; the last value of each."""
        return {
            name: values[-1].decode("utf-8", "replace")
            for name, values in self.request.query_arguments.items()  # type: ignore[attr-defined]
            if name not in UNSEEN_PARAMS
        }

    def new_client(self, comm_id: str | None = None, *, can_send: bool = True) -> Subscriber:
        """A subscriber to ``comm_id`` (to a new comm if None) for the current user."""
        user = self.current_user  # type: ignore[attr-defined]
        identity = Identity(
            getattr(user, "display_name", "") or getattr(user, "name", ""),
            getattr(user, "initials", None),
            getattr(user, "color", None),
        )
        client_id, comm_id = uuid.uuid4().hex, comm_id or uuid.uuid4().hex
        return Subscriber(client_id, comm_id, user.username, can_send, identity)

    @contextmanager
    def http_errors(self) -> Iterator[None]:
        """Before a response starts, every fault of the package answers with its status."""
        try:
            yield
        except TransportsError as e:
            raise web.HTTPError(e.status, str(e)) from e
