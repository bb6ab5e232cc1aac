"""The routing table, event by event (pure: no server, no kernel)."""

from __future__ import annotations

import pytest

from jupyter_transports.actions import Close, Deliver, Lost, ToKernel
from jupyter_transports.errors import CloseCode, CommNotFound, ReadOnly
from jupyter_transports.framing import FrameMode
from jupyter_transports.kernel_message import KernelCommMessage
from jupyter_transports.protocol import COMM_CLOSE, COMM_MSG, COMM_OPEN
from jupyter_transports.router import Router, Subscriber


def client(name: str, comm_id: str = "c1", *, can_send: bool = True) -> Subscriber:
    return Subscriber(name, comm_id, user=f"user-{name}", can_send=can_send)


def kernel_says(router: Router, data, *, comm_id="c1", metadata=None, buffers=()):
    return router.from_kernel(
        KernelCommMessage(COMM_MSG, {"comm_id": comm_id, "data": data}, metadata or {}, buffers)
    )


def test_open_sends_comm_open_with_identity_and_query():
    router = Router()
    [action] = router.open_comm(client("a"), "echo", {"x": 1}, {"color": "blue"})
    assert action == ToKernel(
        COMM_OPEN,
        {"comm_id": "c1", "target_name": "echo", "data": {"x": 1}},
        {"transports": {"client": "a", "user": "user-a", "query": {"color": "blue"}}},
        target_name="echo",
    )


def test_kernel_message_fans_out_once_to_every_attached_client():
    router = Router()
    router.comm_exists("c1", "widget")
    for name in "abc":
        assert router.attach(client(name)) == []  # attaching tells nobody (yet)
    [deliver] = kernel_says(router, {"v": 1})
    assert isinstance(deliver, Deliver)
    assert deliver.clients == ("a", "b", "c")
    assert deliver.frame.for_mode(FrameMode.JSON) == '{"v":1}'


def test_transports_to_unicasts_within_the_comm():
    router = Router()
    router.comm_exists("c1", "widget")
    router.comm_exists("c2", "other")
    router.attach(client("a"))
    router.attach(client("b"))
    router.attach(client("z", "c2"))
    to = {"transports": {"to": ["b", "z", "b", "nobody"]}}
    [deliver] = kernel_says(router, 1, metadata=to)
    assert deliver.clients == ("b",)
    assert kernel_says(router, 1, metadata={"transports": {"to": []}}) == []


def test_other_comms_and_unknown_comms_are_isolated():
    router = Router()
    router.comm_exists("c1", "w")
    router.comm_exists("c2", "w")
    router.attach(client("a", "c1"))
    router.attach(client("b", "c2"))
    [deliver] = kernel_says(router, "x", comm_id="c2")
    assert deliver.clients == ("b",)
    assert kernel_says(router, "x", comm_id="nope") == []


def test_client_messages_carry_identity_and_read_only_is_refused():
    router = Router()
    router.comm_exists("c1", "w")
    router.attach(client("a"))
    router.attach(client("r", can_send=False))
    [action] = router.send("a", {"hi": 1}, [b"buf"])
    assert action == ToKernel(
        COMM_MSG,
        {"comm_id": "c1", "data": {"hi": 1}},
        {"transports": {"client": "a", "user": "user-a"}},
        [b"buf"],
        target_name="w",
    )
    with pytest.raises(ReadOnly):
        router.send("r", "no")


def test_owner_leaving_closes_the_comm_and_its_followers():
    router = Router()
    router.open_comm(client("owner"), "echo", {}, {})
    router.attach(client("follower"))
    actions = router.leave("owner")
    assert actions[0].msg_type == COMM_CLOSE and actions[0].content["comm_id"] == "c1"
    assert actions[1] == Close("follower", CloseCode.COMM_CLOSED, actions[1].reason)
    assert router.comms == {} and router.clients == {}
    assert router.leave("follower") == []  # its socket's own goodbye is a no-op


def test_follower_leaving_keeps_the_comm():
    router = Router()
    router.open_comm(client("owner"), "echo", {}, {})
    router.attach(client("follower"))
    assert router.leave("follower") == []
    assert list(router.comms["c1"].clients) == ["owner"]


def test_kernel_close_ends_followers_with_1000_and_refusal_with_4404():
    router = Router()
    router.open_comm(client("a"), "nope", {}, {})
    [close] = router.from_kernel(
        KernelCommMessage(COMM_CLOSE, {"comm_id": "c1", "data": {}}, {}, (), COMM_OPEN)
    )
    assert close.code == CloseCode.NO_SUCH_COMM

    router.comm_exists("c2", "w")
    router.attach(client("b", "c2"))
    actions = router.from_kernel(
        KernelCommMessage(
            COMM_CLOSE, {"comm_id": "c2", "data": {"bye": 1}}, {}, (), "execute_request"
        )
    )
    assert isinstance(actions[0], Deliver) and actions[0].frame.data == {"bye": 1}
    assert actions[1].code == CloseCode.COMM_CLOSED
    assert router.clients == {}


def test_attach_to_unknown_comm_fails():
    with pytest.raises(CommNotFound):
        Router().attach(client("a", "missing"))


def test_kernel_gone_closes_everyone_and_server_stop_closes_owned_comms():
    router = Router()
    router.open_comm(client("a"), "echo", {}, {})
    router.comm_exists("k", "widget")
    router.attach(client("b", "k"))
    actions = router.server_stopping("bye")
    assert [a.content["comm_id"] for a in actions if isinstance(a, ToKernel)] == ["c1"]
    assert {(a.client, a.code) for a in actions if isinstance(a, Close)} == {
        ("a", CloseCode.GOING_AWAY),
        ("b", CloseCode.GOING_AWAY),
    }
    assert router.comms == {} and router.clients == {}


def test_gaps_in_the_kernels_numbers_are_counted_as_lost():
    """A kernel that numbers its messages on a comm (transports.sent): the missing numbers
    never reached the server. Counted from the first number seen, whoever was attached."""
    router = Router()
    router.comm_exists("c1", "widget")

    def sent(n: int) -> list:
        return kernel_says(router, n, metadata={"transports": {"sent": n}})

    assert sent(7) == []  # the first seen: what came before is not the server's to know
    assert sent(8) == []  # nobody attached: routed to no one, counted all the same
    router.attach(client("a"))
    [lost, deliver] = sent(11)
    assert lost == Lost("c1", 2)
    assert isinstance(deliver, Deliver) and deliver.frame.data == 11
    assert [a for a in sent(12) if isinstance(a, Lost)] == []
    assert [a for a in kernel_says(router, "unnumbered") if isinstance(a, Lost)] == []
