"""The pool of buffers large client messages are read into, and unmasking in place (pure)."""

from __future__ import annotations

import os

import pytest

from jupyter_transports import client_frames
from jupyter_transports.client_frames import UNMASK_STEP, BufferPool, unmask


def reference_unmask(mask: bytes, body: bytes) -> bytes:
    """RFC 6455 section 5.3, byte by byte."""
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(body))


@pytest.mark.parametrize("length", [0, 1, 5, UNMASK_STEP - 1, UNMASK_STEP, 2 * UNMASK_STEP + 3])
@pytest.mark.parametrize("mask_with", ["vectorised", "tornado"])
def test_unmask_in_place_is_rfc_6455s(length, mask_with, monkeypatch):
    if mask_with == "tornado":
        monkeypatch.setattr(client_frames, "apply_mask", client_frames.tornado_mask)
    else:
        from websockets.speedups import apply_mask

        assert client_frames.apply_mask is apply_mask  # the compiled mask, not the fallback
    mask, body = os.urandom(4), os.urandom(length)
    buffer = bytearray(b"x" * 7 + body + b"y" * 5)  # a view in the middle of a larger buffer
    with memoryview(buffer) as whole, whole[7 : 7 + length] as payload:
        unmask(mask, payload)
    assert buffer == b"x" * 7 + reference_unmask(mask, body) + b"y" * 5


def test_a_buffer_is_lent_again_only_once_no_view_of_it_is_left():
    pool = BufferPool(kept_bytes=1 << 20)
    view = memoryview(pool.take(1000))[:10]  # a handler still holds the message
    first = id(view.obj)
    assert id(pool.take(1000)) != first  # another buffer (free again once dropped here)
    del view
    assert id(pool.take(500)) == first  # free again, and large enough


def test_a_buffer_is_lent_only_when_large_enough():
    pool = BufferPool(kept_bytes=1 << 20)
    small = id(pool.take(100))
    larger = pool.take(1000)
    assert id(larger) != small and len(larger) >= 1000


def test_the_pool_keeps_no_more_than_its_budget():
    pool = BufferPool(kept_bytes=3000)
    held = [pool.take(1000) for _ in range(5)]  # all in use: two are the message's own
    assert sum(map(len, pool.buffers)) <= 3000
    del held
    big = pool.take(2500)  # free ones make room, smallest first
    assert big in pool.buffers and sum(map(len, pool.buffers)) <= 3000
    assert BufferPool(kept_bytes=0).take(10) not in BufferPool(kept_bytes=0).buffers


def test_a_message_in_fragments_gets_the_largest_free_buffer():
    """Its size is known only at its end: a larger buffer spares copying it while it grows."""
    pool = BufferPool(kept_bytes=1 << 20)
    small, large = pool.take(1000), pool.take(5000)
    ids = id(small), id(large)
    del small, large
    assert id(pool.take(500)) == ids[0]  # a message of known size: the first that fits
    assert id(pool.take(500, largest=True)) == ids[1]
