"""An asyncio REPL for the docs' Python snippets, as ``python -m asyncio`` is, fed by the tests.

Reads one JSON request per line on stdin (``{"name": …, "code": …, "timeout": …}``) and runs its
code in one namespace, on one event loop that runs all the time: clients that a snippet made go on
answering the kernel between snippets, as they do in ``python -m asyncio``. Top-level ``await``
works. Writes one JSON result per line on the stdout it was started with (``{"ok": …, "output":
…}``); what the snippets print, and what their callbacks print between them, is captured into
the next result's output.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import io
import json
import sys
import traceback
from typing import Any

FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


async def run(code: str, name: str, namespace: dict[str, Any], timeout: float) -> None:
    result = eval(compile(code, name, "exec", flags=FLAGS), namespace)
    if inspect.iscoroutine(result):
        await asyncio.wait_for(result, timeout)


async def main() -> None:
    protocol = sys.stdout
    captured = io.StringIO()
    sys.stdout = sys.stderr = captured
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.__stdin__.readline):
        request = json.loads(line)
        try:
            await run(request["code"], request["name"], namespace, request["timeout"])
            ok = True
        except BaseException as e:  # the snippet's fault, whatever it is, is its result
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            traceback.print_exc(file=captured)
            ok = False
        output = captured.getvalue()
        captured.seek(0)
        captured.truncate()
        protocol.write(json.dumps({"ok": ok, "output": output}) + "\n")
        protocol.flush()


if __name__ == "__main__":
    asyncio.run(main())
