"""Presence and echo in the routing table (pure): only for comms whose kernel opted in."""

from __future__ import annotations

from jupyter_transports.actions import Deliver, Presence, ToKernel
from jupyter_transports.kernel_message import KernelCommMessage
from jupyter_transports.presence import Identity
from jupyter_transports.protocol import COMM_MSG, COMM_OPEN
from jupyter_transports.router import Router, Subscriber

from .test_router import client, kernel_says

OPT_IN = {"transports": {"presence": True, "echo": True, "to": []}}


def events_to_kernel(actions) -> list[tuple[str, str]]:
    return [
        (a.metadata["transports"]["presence"], a.metadata["transports"]["member"]["client"])
        for a in actions
        if isinstance(a, ToKernel) and "presence" in a.metadata.get("transports", {})
    ]


def test_a_comm_that_did_not_opt_in_sees_nothing_new():
    router = Router()
    router.comm_exists("c1", "w")
    assert router.attach(client("a")) == []
    assert router.attach(client("b")) == []
    [to_kernel] = router.send("a", {"x": 1})
    assert isinstance(to_kernel, ToKernel) and to_kernel.msg_type == COMM_MSG
    assert router.leave("b") == []
    assert router.roster("c1") is None


def test_opting_in_tells_the_kernel_of_everyone_in_order_and_them_of_each_other():
    router = Router()
    router.comm_exists("c1", "w")
    router.attach(client("a"))
    router.attach(client("b", can_send=False))
    actions = kernel_says(router, {}, metadata=OPT_IN)  # addressed to nobody
    assert events_to_kernel(actions) == [("join", "a"), ("join", "b")]
    [roster] = [a for a in actions if isinstance(a, Presence)]
    assert roster.clients == ("a", "b")
    assert [(m["client"], m["role"]) for m in roster.event["clients"]] == [
        ("a", "editor"),
        ("b", "observer"),
    ]
    assert not any(isinstance(a, Deliver) for a in actions)

    carol = Subscriber("c", "c1", "carol", identity=Identity("Carol C", "CC", "#f00"))
    actions = router.attach(carol)
    assert events_to_kernel(actions) == [("join", "c")]
    joined, roster = [a for a in actions if isinstance(a, Presence)]
    assert joined.clients == ("a", "b") and joined.event["presence"] == "join"
    assert joined.event["client"] == {
        "client": "c",
        "user": "carol",
        "name": "Carol C",
        "initials": "CC",
        "color": "#f00",
        "role": "editor",
    }
    assert roster.clients == ("c",) and len(roster.event["clients"]) == 3

    actions = router.leave("a")
    assert events_to_kernel(actions) == [("leave", "a")]
    [left] = [a for a in actions if isinstance(a, Presence)]
    assert left.clients == ("b", "c") and left.event == {"presence": "leave", "client": "a"}


def test_echo_relays_to_the_others_in_order_with_the_sender_and_the_kernel_once():
    router = Router()
    router.from_kernel(
        KernelCommMessage(COMM_OPEN, {"comm_id": "c1", "target_name": "w"}, OPT_IN, ())
    )
    for name in "abc":
        router.attach(client(name))
    first = router.send("a", {"n": 1})
    second = router.send("b", {"n": 2})
    assert [type(a) for a in first] == [ToKernel, Deliver]
    relay = first[1]
    assert relay.clients == ("b", "c") and relay.frame.sender == "a" and not relay.broadcast
    assert second[1].clients == ("a", "c") and second[1].frame.seq == relay.frame.seq + 1

    kernel_says(router, {}, metadata={"transports": {"echo": False, "to": []}})
    assert [type(a) for a in router.send("a", {"n": 3})] == [ToKernel]
