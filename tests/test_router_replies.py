"""Reply collection for REST calls in the routing table (pure: no sockets, no kernel)."""

from __future__ import annotations

import pytest

from jupyter_transports.actions import Close, Deliver, ToKernel
from jupyter_transports.errors import CloseCode, CommNotFound, ReadOnly
from jupyter_transports.kernel_message import KernelCommMessage
from jupyter_transports.protocol import COMM_CLOSE, COMM_MSG, COMM_OPEN
from jupyter_transports.router import REPLIES_COMPLETE, Router, Subscriber

COMM = "comm-1"


def widget_router(*attached: str) -> Router:
    """A router that knows one kernel-opened comm, with ``attached`` clients on it."""
    router = Router()
    router.from_kernel(KernelCommMessage(COMM_OPEN, {"comm_id": COMM, "target_name": "w"}, {}))
    for client_id in attached:
        router.attach(Subscriber(client_id, COMM, "user"))
    return router


def kernel_msg(
    router: Router, data: object, parent: str | None = None, to: list[str] | None = None
):
    metadata = {"transports": {"to": to}} if to is not None else {}
    return router.from_kernel(
        KernelCommMessage(COMM_MSG, {"comm_id": COMM, "data": data}, metadata, (), COMM_MSG, parent)
    )


def recipients(actions) -> list[tuple[str, ...]]:
    return [a.clients for a in actions if isinstance(a, Deliver)]


def test_post_without_attaching_carries_identity():
    router = widget_router("socket")
    rest = Subscriber("rest", COMM, "alice")
    [action] = router.post(rest, {"x": 1})
    assert action == ToKernel(
        COMM_MSG,
        {"comm_id": COMM, "data": {"x": 1}},
        {"transports": {"client": "rest", "user": "alice"}},
        target_name="w",
    )
    assert "rest" not in router.clients  # posting attaches nothing


def test_post_refused_for_unknown_comm_and_read_only():
    router = widget_router()
    with pytest.raises(CommNotFound):
        router.post(Subscriber("rest", "nope", "u"), 1)
    with pytest.raises(ReadOnly):
        router.post(Subscriber("rest", COMM, "u", can_send=False), 1)


def test_replies_reach_only_their_collector_and_never_more_than_count():
    router = widget_router("socket")
    first, second = Subscriber("first", COMM, "u"), Subscriber("second", COMM, "u")
    router.expect_replies(first, "msg-1", 2)
    router.expect_replies(second, "msg-2", 1)

    assert recipients(kernel_msg(router, "a", parent="msg-1")) == [("socket", "first")]
    assert recipients(kernel_msg(router, "b", parent="msg-2")) == [("socket", "second")]
    actions = kernel_msg(router, "c", parent="msg-1")
    assert recipients(actions) == [("socket", "first")]
    assert actions[-1] == Close("first", CloseCode.COMM_CLOSED, REPLIES_COMPLETE)
    # the counts are reached: later replies reach the attached socket only
    assert recipients(kernel_msg(router, "d", parent="msg-1")) == [("socket",)]
    assert recipients(kernel_msg(router, "e", parent="msg-2")) == [("socket",)]
    assert recipients(kernel_msg(router, "f")) == [("socket",)]
    assert set(router.clients) == {"socket"}


def test_unicast_reply_to_a_collector():
    router = widget_router("socket")
    router.expect_replies(Subscriber("rest", COMM, "u"), "msg-1", 1)
    assert recipients(kernel_msg(router, "x", parent="msg-1", to=["socket"])) == [("socket",)]
    assert recipients(kernel_msg(router, "y", parent="msg-1", to=["rest"])) == [("rest",)]


def test_collector_that_leaves_is_forgotten():
    router = widget_router()
    router.expect_replies(Subscriber("rest", COMM, "u"), "msg-1", 5)
    assert router.leave("rest") == []
    assert kernel_msg(router, "late", parent="msg-1") == []
    assert router.comms[COMM].collectors == {}


def test_comm_close_ends_collections_and_attachments():
    router = widget_router("socket")
    router.expect_replies(Subscriber("rest", COMM, "u"), "msg-1", 3)
    actions = router.from_kernel(
        KernelCommMessage(
            COMM_CLOSE, {"comm_id": COMM, "data": {"bye": 1}}, {}, (), COMM_MSG, "msg-1"
        )
    )
    assert recipients(actions) == [("socket", "rest")]
    assert {a.client for a in actions if isinstance(a, Close)} == {"socket", "rest"}
    assert router.clients == {} and router.comms == {}


def test_delete_closes_collectors_too():
    router = widget_router("socket")
    router.expect_replies(Subscriber("rest", COMM, "u"), "msg-1", 1)
    actions = router.close_comm(COMM)
    server_close = {"transports": {}}  # tells the kernel it is not a frontend's
    assert actions[0] == ToKernel(
        COMM_CLOSE, {"comm_id": COMM, "data": {}}, server_close, target_name="w"
    )
    assert {a.client for a in actions[1:]} == {"socket", "rest"}


def test_kernel_gone_closes_collectors():
    router = widget_router()
    router.expect_replies(Subscriber("rest", COMM, "u"), "msg-1", 1)
    assert router.kernel_gone(CloseCode.RESTARTING, "restarting") == [
        Close("rest", CloseCode.RESTARTING, "restarting")
    ]


def test_unowned_comm_outlives_its_opener():
    router = Router()
    rest = Subscriber("rest", "new", "u")
    [open_msg] = router.open_comm(rest, "echo", {}, {}, owned=False)
    assert open_msg.msg_type == COMM_OPEN
    assert router.leave("rest") == []
    assert "new" in router.comms


def test_refused_unowned_comm_closes_its_opener_4404():
    router = Router()
    router.open_comm(Subscriber("rest", "new", "u"), "nope", {}, {}, owned=False)
    actions = router.from_kernel(
        KernelCommMessage(COMM_CLOSE, {"comm_id": "new", "data": {}}, {}, (), COMM_OPEN)
    )
    assert [(a.client, a.code) for a in actions] == [("rest", CloseCode.NO_SUCH_COMM)]


def test_expecting_replies_on_unknown_comm():
    with pytest.raises(CommNotFound):
        Router().expect_replies(Subscriber("rest", "nope", "u"), "m", 1)
