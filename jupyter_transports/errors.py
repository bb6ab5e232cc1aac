"""Close codes and the faults that lead to them, mapped in one place.

A client fault closes that client's socket (or answers 4xx); a kernel or server fault closes with
1011 (or answers 5xx). Everyone else on the kernel keeps being served.
"""

from __future__ import annotations

from enum import IntEnum

# Close reasons of a kernel's end, whoever learns of it (the kernel manager, the channels)
KERNEL_RESTARTING = "kernel restarting"
KERNEL_SHUT_DOWN = "kernel shut down"
KERNEL_DIED = "kernel died"


class CloseCode(IntEnum):
    """WebSocket close codes of the contract."""

    COMM_CLOSED = 1000
    GOING_AWAY = 1001  # kernel shut down, or server stopping
    PROTOCOL_ERROR = 1002  # v2: a session's client numbered its messages wrongly
    BAD_FRAME = 1007
    READ_ONLY = 1008
    TOO_BIG = 1009
    BRIDGE_FAILED = 1011  # kernel died and was not restarted, or the bridge failed
    RESTARTING = 1012
    TOO_SLOW = 1013
    NOT_ALLOWED = 4403  # v2, a multiplexed socket's comm: its target is not allowed
    NO_SUCH_COMM = 4404
    REPLACED = 4409  # v2: a newer connection of the same session took over
    COMM_EXISTS = 4409  # v2, a multiplexed socket's comm: a comm of that id exists


class TransportsError(Exception):
    """Base of every fault this package raises on purpose."""

    close_code: CloseCode = CloseCode.BRIDGE_FAILED
    status: int = 500


class ClientFault(TransportsError):
    """The client sent something it may not, or cannot be understood."""

    status = 400


class BadRequest(ClientFault):
    """A REST body that is not what the endpoint takes."""


class TooLarge(ClientFault):
    """A frame or body over ``max_message_bytes``."""

    close_code = CloseCode.TOO_BIG
    status = 413


class BadFrame(ClientFault):
    """A frame that cannot be decoded."""

    close_code = CloseCode.BAD_FRAME


class ReadOnly(ClientFault):
    """A receive-only client tried to send."""

    close_code = CloseCode.READ_ONLY
    status = 403


class TooManySockets(ClientFault):
    """A user, or a kernel, holds as many sockets as the server allows."""

    status = 429


class CommNotFound(ClientFault):
    """The comm does not exist, or the kernel refused to open it."""

    close_code = CloseCode.NO_SUCH_COMM
    status = 404


class CommExists(ClientFault):
    """A client chose the id of a comm that exists for a comm it opens."""

    close_code = CloseCode.COMM_EXISTS
    status = 409


class KernelFault(TransportsError):
    """The kernel or its channels failed."""


class KernelTimeout(KernelFault):
    """The kernel did not answer within ``kernel_timeout``."""

    status = 504


class KernelNotRunning(KernelFault):
    """A local kernel whose process has exited, and that nothing restarts."""

    status = 503


class KernelGone(KernelFault):
    """The kernel restarted, shut down or died, as its channels found out (a gateway kernel,
    whose manager lives in the gateway)."""

    def __init__(self, close_code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


class GatewayError(KernelFault):
    """The gateway refused the kernel's connection (502, or 404 for a kernel it does not have),
    or could not be reached (503)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status
