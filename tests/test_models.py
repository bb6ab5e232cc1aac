"""transports models served on a comm target (jupyter_transports.models), with the stock client's
handshake honoured: ``since`` resumes from the delta, a codec the comm cannot carry is refused."""

from __future__ import annotations

import asyncio
import json

import transports
from pydantic import BaseModel

from jupyter_transports.client import comm_url

from .conftest import TIMEOUT, closed

MODELS = """
import transports
from pydantic import BaseModel
from jupyter_transports.models import serve_target

class Board(BaseModel):
    title: str = ""
    count: int = 0

board = Board()
session = transports.Session()
board_id = session.host(board)
hub = transports.Server(session)
serve_target(hub, "board")
"""


class Board(BaseModel):
    title: str = ""
    count: int = 0


async def test_the_stock_client_mirrors_and_edits_a_model_both_ways(server_url, token, kernel):
    await kernel.execute(MODELS)
    board_id = await kernel.evaluate("board_id")
    client = transports.Client()
    changes: asyncio.Queue[Board] = asyncio.Queue()
    client.on_change(lambda change: changes.put_nowait(client.model(board_id, Board)))
    url = comm_url(server_url, kernel.id, "targets", "board", frames="text", token=token)
    connection = asyncio.create_task(client.connect(url))
    try:
        assert (await asyncio.wait_for(changes.get(), TIMEOUT)).count == 0  # the snapshot
        await kernel.execute("board.title = 'from the kernel'; transports.sync(hub)")
        assert (await asyncio.wait_for(changes.get(), TIMEOUT)).title == "from the kernel"
        value = client.value(board_id)
        assert await client.propose(board_id, {"Map": {**value["Map"], "count": {"Int": 7}}})
        assert (await asyncio.wait_for(changes.get(), TIMEOUT)).count == 7  # the kernel's echo
        assert await kernel.evaluate("board.count") == 7
    finally:
        connection.cancel()
        await asyncio.gather(connection, return_exceptions=True)


async def test_a_client_that_comes_back_with_since_gets_only_what_it_missed(open_comm, kernel):
    await kernel.execute(MODELS)
    board_id = await kernel.evaluate("board_id")
    first = await open_comm("board", frames="text", session=False, codec="json")
    snapshot = json.loads((await asyncio.wait_for(first.recv(), TIMEOUT)).data)
    assert snapshot["t"] == "snapshot"
    await first.close()
    await kernel.execute("board.count = 3; transports.sync(hub)")
    since = json.dumps({str(board_id): snapshot["rev"]})
    again = await open_comm("board", frames="text", session=False, codec="json", since=since)
    message = json.loads((await asyncio.wait_for(again.recv(), TIMEOUT)).data)
    assert message["t"] == "patch" and message["id"] == board_id


async def test_a_codec_a_comm_cannot_carry_is_refused(open_comm, kernel):
    await kernel.execute(MODELS)
    comm = await open_comm("board", session=False, codec="msgpack")
    assert (await closed(comm))[0] == 4404  # the kernel refused the comm (contract v1)
