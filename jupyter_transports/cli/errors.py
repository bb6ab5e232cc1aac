"""Failures as the user of ``jupyter transports`` sees them: one line on stderr, an exit status.

Expected failures (no server, a refused token, an unknown kernel or comm, a refused handshake, a
comm that ends badly) are :class:`CliError`: the app prints the message and exits with the
status, never with a traceback. Pure: no I/O.
"""

from __future__ import annotations

import json
from http import HTTPStatus

EXIT_OK = 0
EXIT_ERROR = 1  # the command could not do its job: no server, an HTTP error, a refused handshake
EXIT_ABNORMAL_CLOSE = 2  # tail, open: the comm ended with a close code other than 1000
EXIT_INTERRUPTED = 130  # as shells report a command that SIGINT ended (a second Ctrl-C)

NOT_FOUND = 404
CHECK_TOKEN = "check --token (`jupyter server list` shows local servers' tokens) and permissions"
HINTS = {401: CHECK_TOKEN, 403: CHECK_TOKEN}
NOT_THE_API = "is the jupyter_transports extension enabled? (`jupyter server extension list`)"


class CliError(Exception):
    """A failure the user is told of in one line, and the exit status it ends with."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class NotFound(CliError):
    """404: the kernel or the comm is not there (the caller may know which, and say so)."""


def http_error(status: int, body: bytes | str | None = None, doing: str = "") -> CliError:
    """The server's refusal as one line: the status, its phrase, the API's message, a hint.

    ``body`` is Jupyter's API error body (``{"message": …, "reason": …}``); a 404 with a body
    of another kind (an HTML page) comes from outside the extension's API.
    """
    phrase = _phrase(status)
    message = api_message(body)
    parts = [f"{status} {phrase}".strip()]
    if message and message.strip() != phrase and message.strip() != parts[0]:
        parts.append(message.strip())
    if hint := HINTS.get(status):
        parts.append(hint)
    if status == NOT_FOUND and body and message is None:
        parts.append(NOT_THE_API)
    text = ": ".join(parts)
    if doing:
        text = f"{doing}: {text}"
    return NotFound(text) if status == NOT_FOUND else CliError(text)


def api_message(body: bytes | str | None) -> str | None:
    """The ``message`` of Jupyter's API error body; None if the body is not one."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return None
    try:
        error = json.loads(body)
    except ValueError:
        return None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    message: str = error["message"]
    return message


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # a status of no standard's
        return ""
