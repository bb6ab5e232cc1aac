"""What ``make bench`` says of itself: each ratio of the run beside the same ratio in the run
before (the ``results.json`` it replaces), flagging any that got more than ``WORSE_BY`` worse.

Ratios of the echo figures also have a spread: the ratio in each round (its anchor measured in
the same round), from the lower to the upper quartile. On 2 shared cores a ratio moves 10 to 15 %
from run to run; a flagged ratio whose value before lies inside this run's spread says so.

Only ratios are compared, never absolute figures: an anchor measured in the same run moves with
the machine, a rate does not.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WORSE_BY = 0.10  # a ratio this much worse than in the run before is flagged
A = "A direct"
CHROMIUM = "bridge (Chromium)"
BARE = "Chromium, bare echo"  # the same page on a bare Tornado echo: the browser's anchor
RELAY_FLOOR = "relay floor"  # benchmarks.floor.measure_big, in each round
PATHS = ("bridge", "bridge (websockets)", CHROMIUM)
ECHO_FIGURES = (  # key, A's key it is compared with, label, whether a higher ratio is better
    ("rt_ms", "rt_ms", "small round trip, {} ÷ A", False),
    ("msg_per_s", "msg_per_s", "small msg/s, {} ÷ A", True),
    ("big_rt_ms", "big_rt_ms", "1 MiB round trip, {} ÷ A", False),
    ("big_mb_per_s", "big_mb_per_s", "1 MiB MB/s, {} ÷ A", True),
    # A's "server" is jupyter_server's iopub subscriber, which does other work; A's client does
    # what the bridge does for an echo (jupyter_client sending and receiving 1 MiB)
    ("big_server_cpu_ms", "big_client_cpu_ms", "server CPU per 1 MiB echo, {} ÷ A's client", False),
)
Results = dict[str, Any]


@dataclass(frozen=True)
class Ratio:
    name: str
    higher_is_better: bool
    of: Callable[[Results], float | None]
    per_round: Callable[[Results], list[float]] | None = None


def _echo_ratio(
    path: str, key: str, anchor_key: str, anchor_path: str = A
) -> Callable[[Results], float | None]:
    def of(results: Results) -> float | None:
        echo = results.get("echo", {})
        figure, anchor = echo.get(path, {}).get(key), echo.get(anchor_path, {}).get(anchor_key)
        return figure / anchor if figure is not None and anchor else None

    return of


def _echo_ratio_per_round(
    path: str, key: str, anchor_key: str, anchor_path: str = A
) -> Callable[[Results], list[float]]:
    def per_round(results: Results) -> list[float]:
        echo = results.get("echo", {})
        figures = echo.get(path, {}).get("rounds", [])
        rounds = zip(figures, echo.get(anchor_path, {}).get("rounds", []), strict=False)
        return [
            figure[key] / anchor[anchor_key]
            for figure, anchor in rounds
            if figure.get(key) is not None and anchor.get(anchor_key)
        ]

    return per_round


def _fan_out_over_floor(sockets: int, floor_key: str) -> Callable[[Results], float | None]:
    def of(results: Results) -> float | None:
        floor = results.get(floor_key)
        for fan in results.get("fan_out", []):
            if fan["path"] == "bridge" and fan["sockets"] == sockets and floor:
                return fan["server_us_per_delivery"] / floor  # type: ignore[no-any-return]
        return None

    return of


def _over_big_floor(path: str) -> Callable[[Results], float | None]:
    def of(results: Results) -> float | None:
        figure = results.get("echo", {}).get(path, {}).get("big_server_cpu_ms")
        floor = results.get("floor_big_ms")  # the median of its rounds
        return figure / floor if figure is not None and floor else None

    return of


def _session_over_plain(results: Results) -> float | None:
    return results.get("session_cost", {}).get("echo", {}).get("rt_ms")  # type: ignore[no-any-return]


RATIOS = [
    *(
        Ratio(
            label.format(path),
            higher,
            _echo_ratio(path, key, anchor_key),
            _echo_ratio_per_round(path, key, anchor_key),
        )
        for path in PATHS
        for key, anchor_key, label, higher in ECHO_FIGURES
    ),
    *(
        Ratio(
            label.format(f"{CHROMIUM} ÷ bare echo"),
            higher,
            _echo_ratio(CHROMIUM, key, key, BARE),
            _echo_ratio_per_round(CHROMIUM, key, key, BARE),
        )
        for key, label, higher in (
            ("big_rt_ms", "1 MiB round trip, {}", False),
            ("big_mb_per_s", "1 MiB MB/s, {}", True),
            ("big_server_cpu_ms", "server CPU per 1 MiB echo, {}", False),
        )
    ),
    *(
        Ratio(
            f"server CPU per 1 MiB echo, {path} ÷ relay floor",
            False,
            _over_big_floor(path),
            _echo_ratio_per_round(path, "big_server_cpu_ms", "big_server_cpu_ms", RELAY_FLOOR),
        )
        for path in PATHS[:2]
    ),
    Ratio(
        "fan-out N = 1, server CPU per delivery ÷ floor (queued)",
        False,
        _fan_out_over_floor(1, "floor_us"),
    ),
    Ratio(
        "fan-out N = 1, server CPU per delivery ÷ floor (paced)",
        False,
        _fan_out_over_floor(1, "floor_paced_us"),
    ),
    Ratio("small round trip, session ÷ plain", False, _session_over_plain),
]


@dataclass(frozen=True)
class Change:
    name: str
    now: float
    before: float | None
    spread: tuple[float, float] | None = None  # this run's quartiles over its rounds

    @property
    def worse_by(self) -> float | None:
        """How much worse than before (0.12: 12 % worse; negative: better)."""
        if self.before is None:
            return None
        ratio = next(r for r in RATIOS if r.name == self.name)
        change = self.now / self.before - 1
        return -change if ratio.higher_is_better else change

    @property
    def flagged(self) -> bool:
        return self.worse_by is not None and self.worse_by > WORSE_BY

    @property
    def within_spread(self) -> bool:
        """Whether the value before lies inside this run's own spread over its rounds."""
        if self.before is None or self.spread is None:
            return False
        low, high = self.spread
        return low <= self.before <= high


def _quartiles(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 4:
        return None
    low, _, high = statistics.quantiles(values, n=4)
    return low, high


def compare(before: Results | None, now: Results) -> list[Change]:
    """Every ratio the run has, with its value in the run before if that had it."""
    changes = []
    for ratio in RATIOS:
        value = ratio.of(now)
        if value is not None:
            spread = _quartiles(ratio.per_round(now)) if ratio.per_round else None
            changes.append(Change(ratio.name, value, ratio.of(before) if before else None, spread))
    return changes


def report(changes: list[Change], since: str) -> str:
    """A Markdown table of the ratios, the change since ``since``, and the flags."""
    lines = [
        f"| ratio | now | rounds' quartiles | before ({since}) | change | |",
        "|---|---|---|---|---|---|",
    ]
    for change in changes:
        before = "—" if change.before is None else f"{change.before:.2f}"
        worse = change.worse_by
        if worse is None:
            moved = "—"
        elif abs(worse) < 0.005:
            moved = "same"
        else:
            moved = f"{'worse' if worse > 0 else 'better'} {abs(worse):.0%}"
        flag = f"**more than {WORSE_BY:.0%} worse**" if change.flagged else ""
        if change.flagged and change.within_spread:
            flag += " (before is inside this run's quartiles)"
        spread = "—" if change.spread is None else "{:.2f}-{:.2f}".format(*change.spread)
        lines.append(
            f"| {change.name} | {change.now:.2f} | {spread} | {before} | {moved} | {flag} |"
        )
    return "\n".join(lines)
