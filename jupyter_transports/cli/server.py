"""Which Jupyter server the command talks to, and its REST API: the command line's only HTTP.

The server is the one ``--url`` names, else the only one running, found as ``jupyter server
list`` finds them (the ``jpserver-*.json`` files in the runtime directory). Its token is
``--token``, else the one in ``--url``'s query, else that server's runtime file's, else
``$JUPYTER_TOKEN``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .arguments import resolve_prefix, same_server, split_server_url
from .errors import CliError, NotFound, http_error

TOKEN_ENV = "JUPYTER_TOKEN"
RUNTIME_FILES = "jpserver-*.json"  # a running server's, in the runtime directory
REQUEST_TIMEOUT = 60.0  # seconds; the server answers 504 after its kernel_timeout (30 s) first
NO_RESPONSE = 599  # tornado's status for a request that got no response
FULL_KERNEL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KERNELS = "api/kernels"
TRANSPORTS = "api/transports"

T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    """A Jupyter server: its base URL (ending in ``/``) and the token to show it."""

    url: str
    token: str | None


def find_server(url: str | None, token: str | None, runtime_dir: str) -> Server:
    """The server the user means, from ``--url`` and ``--token`` (None if not given)."""
    if url is not None:
        base, token_in_url = split_server_url(url)
        token = token if token is not None else token_in_url
        if token is None:
            found = [s for s in running_servers(runtime_dir) if same_server(s["url"], base)]
            token = (found[0].get("token") if found else None) or os.environ.get(TOKEN_ENV)
        return Server(base, token)
    servers = running_servers(runtime_dir)
    if not servers:
        raise CliError(
            f"no running Jupyter server found (in {runtime_dir}): start one with "
            "`jupyter server`, or give its --url"
        )
    if len(servers) > 1:
        urls = "\n".join(f"  {s['url']}  ({s.get('root_dir', '')})" for s in servers)
        raise CliError(f"several Jupyter servers are running; choose one with --url:\n{urls}")
    [info] = servers
    if info.get("sock"):
        raise CliError(f"the server listens on the UNIX socket {info['sock']}, out of reach here")
    base, _ = split_server_url(info["url"])
    token = token if token is not None else info.get("token") or os.environ.get(TOKEN_ENV)
    return Server(base, token)


def running_servers(runtime_dir: str) -> list[dict[str, Any]]:
    """The runtime files of the servers that run, read as ``jupyter server list`` reads them
    (not through it: importing jupyter_server's app takes two seconds, most of a command's)."""
    from jupyter_server.utils import check_pid  # a tenth of a second; here, as --url needs none

    servers = []
    for path in sorted(Path(runtime_dir).glob(RUNTIME_FILES)):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and isinstance(info.get("pid"), int) and check_pid(info["pid"]):
            servers.append(info)
    return servers


class ServerAPI:
    """The REST endpoints the commands call; every failure a :class:`CliError`."""

    def __init__(self, server: Server, log: logging.Logger) -> None:
        self.server = server
        self.log = log
        self.http = AsyncHTTPClient(force_instance=True)

    def close(self) -> None:
        self.http.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = REQUEST_TIMEOUT,
        doing: str = "",
    ) -> Any:
        """The JSON answer of one call (None if it has none); ``doing`` prefixes its errors."""
        url = self.server.url + path
        headers = {"Authorization": f"token {self.server.token}"} if self.server.token else {}
        request = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=None if body is None else json.dumps(body),
            request_timeout=timeout,
        )
        self.log.debug("%s %s", method, url)
        try:
            response = await self.http.fetch(request, raise_error=False)
        except HTTPClientError as e:  # no response: a timeout
            raise CliError(f"no answer from {self.server.url} within {timeout:g} s ({e})") from None
        except OSError as e:  # refused, unreachable, no such host, TLS
            raise CliError(f"cannot reach {self.server.url}: {e.strerror or e}") from None
        if response.code >= 400:
            raise http_error(response.code, response.body, doing)
        if not response.body:
            return None
        try:
            return json.loads(response.body)
        except ValueError:
            raise CliError(f"{url} did not answer JSON: is it a Jupyter server?") from None

    # -- kernels and comms ---------------------------------------------------------------------

    async def kernels(self) -> list[dict[str, Any]]:
        """The server's kernels, as ``GET /api/kernels`` models them."""
        kernels: list[dict[str, Any]] = await self.request("GET", KERNELS, doing="listing kernels")
        return kernels

    async def status(self) -> dict[str, dict[str, int]]:
        """Per bridged kernel, its comms, clients and traffic counters."""
        status = await self.request("GET", f"{TRANSPORTS}/status", doing="reading the status")
        kernels: dict[str, dict[str, int]] = status["kernels"]
        return kernels

    async def comms(self, kernel_id: str) -> dict[str, dict[str, Any]]:
        """The kernel's comms: per id, its ``target_name`` and attached ``clients``."""
        path = f"{TRANSPORTS}/kernels/{kernel_id}/comms"
        answer = await self.request("GET", path, doing=f"listing the comms of kernel {kernel_id}")
        comms: dict[str, dict[str, Any]] = answer["comms"]
        return comms

    async def send(
        self, kernel_id: str, comm_id: str, data: Any, wait: float, count: int
    ) -> list[Any]:
        """Send one message; the kernel's replies to it (at most ``count``, within ``wait``)."""
        path = f"{TRANSPORTS}/kernels/{kernel_id}/comms/{quote(comm_id, safe='')}"
        body = {"data": data, "wait": wait, "count": count}
        answer = await self.request(
            "POST", path, body, timeout=wait + REQUEST_TIMEOUT, doing=f"sending to comm {comm_id}"
        )
        replies: list[Any] = answer["replies"]
        return replies

    async def kernel_id(self, given: str) -> str:
        """The id of the kernel ``given`` names: the id itself, or a unique prefix of it."""
        ids = [kernel["id"] for kernel in await self.kernels()]
        if given not in ids and FULL_KERNEL_ID.fullmatch(given):
            return given  # a gateway's kernel, which this server lists once it has used it
        try:
            return resolve_prefix(given, ids, "kernel")
        except CliError as e:
            raise CliError(f"{e} on {self.server.url}") from None

    async def on_comm(
        self, kernel_id: str, given: str, action: Callable[[str], Awaitable[T]]
    ) -> tuple[str, T]:
        """The id of the comm ``given`` names, and ``action(comm_id)`` on it: the id as given,
        or, if the server does not know that, the one comm whose id begins with it (the kernel
        lists its comms only then)."""
        try:
            return given, await action(given)
        except NotFound:
            comm_ids = await self.comms(kernel_id)
            if given in comm_ids:
                raise  # not the comm that is missing
        try:
            comm_id = resolve_prefix(given, comm_ids, "comm")
        except CliError as e:
            raise CliError(f"{e} in kernel {kernel_id}") from None
        return comm_id, await action(comm_id)
