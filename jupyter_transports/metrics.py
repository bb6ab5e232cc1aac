"""The bridge's counters as Prometheus metrics, on jupyter_server's own ``/metrics``.

The counters live in :class:`~.stats.KernelStats` (plain ints, so counting costs one add per
message); this collector turns them into Counters and Gauges labelled by ``kernel_id`` when
Prometheus scrapes, so ``/metrics`` and ``GET /api/transports/status`` always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

PREFIX = "jupyter_transports_"
KERNEL_ID = "kernel_id"

GAUGES = {
    "comms": "Comms the bridge routes, per kernel",
    "clients": "Clients (sockets and event streams) attached to a comm, per kernel",
}
COUNTERS = {
    "messages_to_kernel": "Comm messages clients sent to the kernel",
    "bytes_to_kernel": "Bytes of the comm messages clients sent to the kernel",
    "messages_from_kernel": "Comm messages of the kernel routed to at least one client",
    "bytes_from_kernel": "Bytes of the comm messages of the kernel routed to clients",
    "drops": "Clients closed for falling too far behind",
    "lost": "Numbered comm messages of the kernel that never reached the server (iopub overflow)",
}

Status = Mapping[str, Mapping[str, int]]


class TransportsCollector(Collector):
    """Reads ``status()`` (per kernel id, each counter's value) at every scrape."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self.status = status

    def describe(self) -> Iterator[Metric]:
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.status())

    def _families(self, status: Status) -> Iterator[Metric]:
        for kind, names in ((GaugeMetricFamily, GAUGES), (CounterMetricFamily, COUNTERS)):
            for name, documentation in names.items():
                family = kind(PREFIX + name, documentation, labels=[KERNEL_ID])
                for kernel_id, values in status.items():
                    family.add_metric([kernel_id], values[name])
                yield family


def register(
    status: Callable[[], Status], registry: CollectorRegistry = REGISTRY
) -> TransportsCollector:
    """Publish the counters on ``registry`` (``/metrics`` serves it) until :func:`unregister`."""
    collector = TransportsCollector(status)
    registry.register(collector)
    return collector


def unregister(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    registry.unregister(collector)
