"""The guard in front of the simulators' HTTP control APIs.

The control APIs move money on simulated cards, cut SMPP links and write
files, and they listen on 127.0.0.1 where any web page the tester opens can
reach them. Two browser tricks are refused before a route runs:

- DNS rebinding: a page from evil.example re-points its name at 127.0.0.1
  and calls the API as a same-origin site. Its requests carry
  `Host: evil.example`; only the names the API is served under (localhost,
  127.0.0.1, ::1, the endpoint's interface and names configured for it) on
  the port the connection arrived on are accepted (421 otherwise).
- Cross-site "simple" requests (HTML forms, no-cors fetch) can POST
  text/plain or form data without a CORS preflight. Every POST, PUT and
  PATCH, and any request that carries a body, must be
  `Content-Type: application/json` (415 otherwise), which a browser sends
  cross-site only after a preflight this API never answers.
"""
from __future__ import annotations

import json
from typing import Iterable

from twisted.web.resource import Resource
from twisted.web.server import Site

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_BODY_METHODS = (b"POST", b"PUT", b"PATCH")


def endpoint_hosts(endpoint: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a control API on server endpoint string `endpoint`
    answers to: loopback names, its `interface=` (unless a wildcard) and
    `extra` (the names testers reach it by, for a non-loopback interface)."""
    names = set(LOOPBACK_NAMES)
    for part in endpoint.split(":")[1:]:
        key, _, value = part.partition("=")
        if key == "interface" and value not in ("", "0.0.0.0", "::"):
            names.add(value.strip("[]").lower())
    names.update(h.strip("[]").lower() for h in extra)
    return frozenset(names)


def _split_host(value: str) -> tuple[str, int | None] | None:
    value = value.strip().lower()
    if value.startswith("["):                       # [::1]:8025
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return None
    else:
        name, sep, port = value.rpartition(":")
        if not sep:
            name, port = value, None
    if port is not None and not port.isdigit():
        return None
    return name, int(port) if port is not None else None


def refusal(request, hosts: frozenset[str]) -> tuple[int, str] | None:
    """(status, message) when the request must not reach the API, else None."""
    refused = host_refusal(request, hosts)
    if refused is not None:
        return refused
    length = request.getHeader(b"content-length")
    has_body = (length not in (None, b"0")) or request.getHeader(b"transfer-encoding") is not None
    if request.method in _BODY_METHODS or has_body:
        ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            return 415, "requests with a body must be Content-Type: application/json"
    return None


def host_refusal(request, hosts: frozenset[str]) -> tuple[int, str] | None:
    """The DNS rebinding half of `refusal`, for a simulator that also takes
    HTML forms (the sample shop checks their Origin instead)."""
    raw = request.requestHeaders.getRawHeaders(b"host")
    if not raw or len(raw) != 1:
        return 400, "exactly one Host header is required"
    parsed = _split_host(raw[0].decode("latin-1"))
    served_port = request.getHost().port
    if parsed is None or parsed[0] not in hosts or (parsed[1] if parsed[1] is not None else 80) != served_port:
        return 421, f"this control API does not serve host {raw[0].decode('latin-1')!r}"
    return None


class _Refused(Resource):
    isLeaf = True

    def __init__(self, code: int, message: str):
        super().__init__()
        self.code, self.message = code, message

    def render(self, request):
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return json.dumps({"error": self.message}).encode("utf-8")


class GuardedSite(Site):
    """A Site whose requests pass `refusal` before any resource sees them."""

    def __init__(self, resource, hosts: frozenset[str], **kwargs):
        super().__init__(resource, **kwargs)
        self.hosts = hosts

    def getResourceFor(self, request):
        refused = refusal(request, self.hosts)
        if refused is not None:
            return _Refused(*refused)
        return super().getResourceFor(request)
