"""Benchmarks of the bridge against its anchors; run with ``python -m benchmarks`` (``make bench``)."""
