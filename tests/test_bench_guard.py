"""The benchmark's guard: ratios against the run before, and this run's spread (pure)."""

from __future__ import annotations

from benchmarks import guard


def echo_run(bridge_rts: list[float], a_rts: list[float]) -> dict:
    rounds = lambda rts: [{"rt_ms": rt} for rt in rts]  # noqa: E731
    median = lambda rts: sorted(rts)[len(rts) // 2]  # noqa: E731
    return {
        "echo": {
            "A direct": {"rt_ms": median(a_rts), "rounds": rounds(a_rts)},
            "bridge": {"rt_ms": median(bridge_rts), "rounds": rounds(bridge_rts)},
        }
    }


def change(before: dict, now: dict, name: str = "small round trip, bridge ÷ A") -> guard.Change:
    return next(c for c in guard.compare(before, now) if c.name == name)


def test_a_ratio_more_than_ten_percent_worse_is_flagged_with_this_runs_spread():
    before = echo_run([1.0] * 5, [1.0] * 5)
    steady = change(before, echo_run([1.3, 1.3, 1.3, 1.3, 1.3], [1.0] * 5))
    assert steady.flagged and not steady.within_spread
    assert steady.spread == (1.3, 1.3)
    noisy = change(before, echo_run([0.9, 1.0, 1.2, 1.3, 1.6], [1.0] * 5))
    assert noisy.flagged and noisy.within_spread  # 1.0 lies inside this run's quartiles
    assert "inside this run's quartiles" in guard.report([noisy], "the run before")


def test_higher_is_better_ratios_are_worse_when_lower():
    def run(msgs: float) -> dict:
        return {"echo": {"A direct": {"msg_per_s": 1000.0}, "bridge": {"msg_per_s": msgs}}}

    dropped = change(run(1000.0), run(800.0), "small msg/s, bridge ÷ A")
    assert dropped.flagged and dropped.spread is None  # no rounds: no spread
    assert not change(run(1000.0), run(1200.0), "small msg/s, bridge ÷ A").flagged


def test_the_relay_floor_ratio_has_the_spread_of_its_rounds():
    def run(server_ms: list[float], floor_ms: list[float]) -> dict:
        return {
            "echo": {
                "bridge": {
                    "big_server_cpu_ms": 1.5,
                    "rounds": [{"big_server_cpu_ms": ms} for ms in server_ms],
                },
                guard.RELAY_FLOOR: {"rounds": [{"big_server_cpu_ms": ms} for ms in floor_ms]},
            },
            "floor_big_ms": 0.75,
        }

    now = change(
        None,
        run([1.4, 1.5, 1.6, 1.5], [0.7, 0.75, 1.6, 0.75]),
        "server CPU per 1 MiB echo, bridge ÷ relay floor",
    )
    assert now.now == 2.0  # the medians' ratio
    assert now.spread == (1.25, 2.0)  # each round against its own floor: one of 1.6 ms gives 1.0
