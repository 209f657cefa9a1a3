"""Host names and origins as the web server compares them.

Standard library only: ``settings`` checks ``web.allowed_hosts`` and
``web.allowed_origins`` with these functions, and ``guard`` compares requests with
them. A host is compared lowercased, without IPv6 brackets and without a final dot;
an origin as ``scheme://host[:port]`` without the scheme's default port.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

ANY_HOST = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")

_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")  # a DNS name or an IPv4 address
_PORT = re.compile(r"[0-9]{1,5}")


def _host(text: str) -> str | None:
    text = text.lower()
    if text.startswith("[") and text.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            return None
    if text.endswith("."):
        text = text[:-1]
    return text if _NAME.fullmatch(text) else None


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (a Host header, an origin's authority): the host as compared and the
    port; ``None`` when it is not that."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[:end + 1], value[end + 1:]
    else:
        host, sep, rest = value.partition(":")
        rest = sep + rest
    port = None
    if rest:
        if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]) or int(rest[1:]) > 65535:
            return None
        port = int(rest[1:])
    name = _host(host)
    return None if name is None else (name, port)


def origin(value: str) -> str | None:
    """``value`` (``scheme://host[:port]``) as compared; ``None`` when it is not an http(s)
    origin (``null``, a path, another scheme)."""
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        return None
    found = split_host(rest)
    if found is None:
        return None
    host, port = found
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port in (None, DEFAULT_PORTS[scheme]) else f":{port}")


def host_setting(entry: str) -> str:
    """An entry of ``web.allowed_hosts`` as compared; ``ValueError`` saying what to write."""
    if entry == ANY_HOST:
        return entry
    if "/" in entry:
        raise ValueError("give a host name (e.g. tasks.example.com) or an IP address, not a URL")
    if ":" in entry and not entry.startswith("["):
        try:
            return str(ipaddress.IPv6Address(entry))
        except ValueError:
            raise ValueError("give the host name without a port (any port is accepted)") from None
    found = split_host(entry)
    if found is None:
        raise ValueError("not a host name (e.g. tasks.example.com) or an IP address")
    if found[1] is not None:
        raise ValueError("give the host name without a port (any port is accepted)")
    return found[0]


def origin_setting(entry: str) -> str:
    """An entry of ``web.allowed_origins`` as compared; ``ValueError`` saying what to write."""
    found = origin(entry[:-1] if entry.endswith("/") else entry)
    if found is None:
        raise ValueError("give an origin as scheme://host[:port] (e.g. https://lab.example.com), "
                         "http or https, without a path")
    return found


def served_names(bound: str, configured: Iterable[str]) -> list[str]:
    """The host names a server bound to ``bound`` answers to besides loopback ones: that
    host, the machine's name when bound to every address, and ``configured``."""
    names = list(configured)
    if bound in WILDCARD_ADDRESSES:
        names.append(socket.gethostname().lower())
    else:
        try:
            names.append(host_setting(bound))
        except ValueError:
            pass  # not a name a client could send
    return names
