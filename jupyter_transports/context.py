"""Server work started by a request, run outside of it.

jupyter_server keeps each request's handler in a context variable, and every asyncio task and
timer holds the context it was made in: a bridge's reader or a session's linger made while a
socket's handshake or close is handled would keep that handler (its request, query string and
buffers) alive for as long as they run.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def detached(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in an empty context: what it schedules keeps no request
    alive."""
    return contextvars.Context().run(function, *args, **kwargs)
