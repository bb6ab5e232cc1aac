"""RPC over one comm: calls, ``echo`` and ``pipe`` both ways (stdlib only: kernels import it).

Both ends of a conversation (one comm) speak the same messages, each one comm message whose
``data`` is a JSON object. Binary values anywhere in ``args`` or ``result`` travel as comm
buffers, never as base64: they are replaced by ``null`` in the JSON and their places listed in
``buffer_paths`` (the layout ipywidgets uses), buffer *i* belonging at path *i*::

    {"rpc": "call",   "id": 7, "name": "add", "args": [1, 2]}
    {"rpc": "echo",   "id": 8, "args": [...]}             answered with the args themselves
    {"rpc": "pipe",   "id": 9, "args": [null], "buffer_paths": [["args", 0]]}  answered: the bytes
    {"rpc": "return", "id": 7, "result": 3}
    {"rpc": "raise",  "id": 7, "error": {"type": "ValueError", "message": "..."}}

Ids are chosen by the caller and are unique among its pending calls; each end keeps its own.
A request that cannot be answered (no handler, no such method, a malformed message) is answered
with ``raise``, so a caller never waits for its timeout because of a mistake on the other side.

**Batches.** A kernel spends far more CPU per comm message than per RPC call in it, so each end
queues the messages it produces during one turn of its event loop and sends them at the end of
that turn as one comm message::

    {"rpc": "batch", "messages": [{"rpc": "call", "id": 1, ...}, {"rpc": "pipe", "id": 2,
     "args": [null], "buffer_paths": [["args", 0]]}, ...]}

Each inner message keeps its own ``buffer_paths``; the batch's buffers are those of its inner
messages concatenated in order (inner message *k* owns the next ``len(buffer_paths)`` of them).
A batch holds at least two messages (a lone message goes as itself, so an end that does not
read batches still understands every lone call) and at most ``MAX_BATCH_MESSAGES`` messages or
about ``MAX_BATCH_BYTES`` of buffers (:mod:`.codec`). Batches do not nest.

:mod:`.codec` turns messages into comm data and buffers and back; :mod:`.endpoint` sends and
answers them on asyncio.
"""

from __future__ import annotations

from .codec import ConnectionLost, NoClient, ProtocolError, RemoteError, RpcError

__all__ = ["ConnectionLost", "NoClient", "ProtocolError", "RemoteError", "RpcError"]
