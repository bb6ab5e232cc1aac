"""What the user typed, understood: message data, ids given by a prefix, server URLs. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .errors import CliError

VARIADIC = "..."  # a name ending so takes any number of values (none included)
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_PARAM = "token"


def parse_data(text: str) -> Any:
    """A message's data as typed: JSON if it is JSON, else the text as a string.

    So ``42`` and ``{"a": 1}`` are JSON, ``hello`` and ``"42"`` strings. ``NaN`` and
    ``Infinity``, which Python's JSON takes but JSON does not, stay strings.
    """
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text


def parse_open_data(text: str) -> dict[str, Any]:
    """``--data`` of ``open``: a JSON object, which the comm_open carries as its data."""
    try:
        data = json.loads(text, parse_constant=_not_json)
    except ValueError as e:
        raise CliError(f"--data is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise CliError(f"--data must be a JSON object, not {text!r}")
    return data


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def resolve_prefix(given: str, ids: Iterable[str], what: str) -> str:
    """The id that is ``given``, or else the only one that starts with it (as git takes a
    commit's); :class:`CliError` if none or several do."""
    ids = list(ids)
    if given in ids:
        return given
    if not given:
        raise CliError(f"an empty {what} id")
    matches = sorted(i for i in ids if i.startswith(given))
    if not matches:
        raise CliError(f"no {what} {given!r}")
    if len(matches) > 1:
        raise CliError(f"{what} id {given!r} is ambiguous: {', '.join(matches)} begin with it")
    return matches[0]


def check_arguments(names: Sequence[str], given: Sequence[str], usage: str) -> None:
    """:class:`CliError` with the usage unless ``given`` fits the positional ``names``."""
    variadic = bool(names) and names[-1].endswith(VARIADIC)
    fixed = len(names) - variadic
    if len(given) < fixed or (not variadic and len(given) > fixed):
        expected = " ".join(names) or "no arguments"
        raise CliError(f"expected {expected}, got {len(given)} argument(s)\nusage: {usage}")


def split_server_url(text: str) -> tuple[str, str | None]:
    """``--url`` as the user may paste it: the server's base URL (ending in ``/``) and the token
    its query holds, if any (``jupyter server list`` prints ``http://host:port/?token=…``).

    A URL without a scheme is taken as ``http://``.
    """
    if "://" not in text:
        text = f"http://{text}"
    scheme, netloc, path, query, _ = urlsplit(text)
    if not netloc:
        raise CliError(f"--url {text!r} names no host")
    tokens = parse_qs(query).get(TOKEN_PARAM)
    base = urlunsplit((scheme.lower(), netloc, path.rstrip("/") + "/", "", ""))
    return base, tokens[-1] if tokens else None


def same_server(a: str, b: str) -> bool:
    """Whether two base URLs name the same server (``localhost`` and ``127.0.0.1`` alike)."""
    return _server_key(a) == _server_key(b)


def _server_key(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in LOOPBACK:
        host = "localhost"
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # not a port number
        port = None
    return parts.scheme.lower(), host, port, parts.path.rstrip("/") + "/"
