"""HTTP plumbing the pages and the API share: a request that refuses to
buffer a body beyond the limit, JSON bodies checked against a small field
spec, and the JSON error every refusal answers with.

twisted.web buffers the whole body before the resource sees it; a body
over `max_body` is dropped as it arrives (so a huge upload costs the
daemon no memory) and the route answers 413.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from twisted.web import server

JSON_TYPE = "application/json"


class HttpError(Exception):
    """A refusal with its status; `extra` joins the JSON body."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra

    def body(self) -> dict:
        return {"error": self.message, **self.extra}


class LimitedRequest(server.Request):
    max_body = 64 * 1024

    def gotLength(self, length):
        self.body_too_large = length is not None and length > self.max_body
        self._body_bytes = 0
        super().gotLength(0 if self.body_too_large else length)     # nothing of it will be kept

    def handleContentChunk(self, data):
        self._body_bytes = getattr(self, "_body_bytes", 0) + len(data)
        if self._body_bytes > self.max_body:
            self.body_too_large = True
            return
        super().handleContentChunk(data)


def limited_request(max_body: int):
    return type("Request", (LimitedRequest,), {"max_body": max_body})


def too_large(request) -> bool:
    return bool(getattr(request, "body_too_large", False))


def client_address(request, trusted_proxies: frozenset[str] = frozenset()) -> str:
    """The caller's address, for throttling and the audit log. Behind a
    proxy every request comes from the proxy: when the peer is one of
    `trusted_proxies`, the address is the last hop of X-Forwarded-For that
    is not a trusted proxy (earlier hops are whatever the client wrote)."""
    addr = request.getClientAddress()
    peer = getattr(addr, "host", None) or str(addr)
    if peer not in trusted_proxies:
        return peer
    hops = [h.strip() for h in (request.getHeader("x-forwarded-for") or "").split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted_proxies:
            return hop[:64]
    return peer


@dataclass(frozen=True)
class Field:
    """One member of a JSON body: its JSON Schema type, whether it must be
    there, and the bounds the server enforces. Each bound is both checked
    here and written into the OpenAPI document, so what the document
    promises a client is what the server does (and a fuzzer generating
    from the document finds the edges where they really are). `pattern`
    is a JSON Schema (ECMA) regex kept to the subset Python reads the same
    way; `example` is a value that gets past the bounds into the handler."""
    type: str                        # "string" | "integer" | "boolean"
    required: bool = True
    max_length: int | None = None
    enum: tuple[str, ...] | None = None
    description: str = ""
    min_length: int | None = None
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    example: Any = None

    def schema(self) -> dict:
        s: dict[str, Any] = {"type": self.type}
        for key, value in (("minLength", self.min_length), ("maxLength", self.max_length),
                           ("pattern", self.pattern), ("minimum", self.minimum), ("maximum", self.maximum)):
            if value is not None:
                s[key] = value
        if self.enum:
            s["enum"] = list(self.enum)
        if self.description:
            s["description"] = self.description
        if self.example is not None:
            s["examples"] = [self.example]
        return s

    def refusal(self, name: str, v: Any) -> str | None:
        """Why the value `v` (of the right type) is refused, or None."""
        if isinstance(v, str):
            if self.max_length is not None and len(v) > self.max_length:
                return f"{name} is longer than {self.max_length} characters"
            if self.min_length is not None and len(v) < self.min_length:
                return f"{name} is shorter than {self.min_length} characters"
            if self.pattern is not None and not _matches(self.pattern, v):
                return f"{name} is not in the expected form ({self.description or self.pattern})"
        if isinstance(v, int):
            if self.minimum is not None and v < self.minimum:
                return f"{name} must be at least {self.minimum}"
            if self.maximum is not None and v > self.maximum:
                return f"{name} must be at most {self.maximum}"
        if self.enum and v not in self.enum:
            return f"{name} must be one of {', '.join(self.enum)}"
        return None


def _matches(pattern: str, v: str) -> bool:
    """As JSON Schema reads `pattern` (ECMA): `$` is the very end (Python's
    also matches before a final newline), and digits are ASCII."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, v, re.ASCII) is not None


_PY_TYPES = {"string": (str,), "integer": (int,), "boolean": (bool,)}


@dataclass(frozen=True)
class Body:
    fields: dict[str, Field] = field(default_factory=dict)

    def schema(self) -> dict:
        return {"type": "object", "additionalProperties": False,
                "properties": {name: f.schema() for name, f in self.fields.items()},
                "required": [name for name, f in self.fields.items() if f.required]}

    def parse(self, request) -> dict[str, Any]:
        """The body as a dict of the declared fields, or HttpError 4xx."""
        if too_large(request):
            raise HttpError(413, f"the body is over {request.max_body} bytes")
        ctype = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
        if ctype != JSON_TYPE:
            raise HttpError(415, f"the body must be {JSON_TYPE}, not {ctype or 'missing'}")
        raw = request.content.read() if request.content is not None else b""
        try:
            value = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "the body is not valid JSON (UTF-8)")
        return self.check(value)

    def check(self, value: Any) -> dict[str, Any]:
        """A decoded body (JSON, or a form converted by `from_form`) as a dict
        of the declared fields, or HttpError 400."""
        if not isinstance(value, dict):
            raise HttpError(400, "the body must be a JSON object")
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            raise HttpError(400, f"unknown field: {unknown[0]}", field=unknown[0])
        out: dict[str, Any] = {}
        for name, f in self.fields.items():
            if name not in value or value[name] is None:
                if f.required:
                    raise HttpError(400, f"missing field: {name}", field=name)
                continue
            v = value[name]
            ok = isinstance(v, _PY_TYPES[f.type]) and not (f.type == "integer" and isinstance(v, bool))
            if not ok:
                raise HttpError(400, f"{name} must be a {f.type}", field=name)
            why = f.refusal(name, v)
            if why is not None:
                raise HttpError(400, why, field=name)
            out[name] = v
        return out


def from_form(body: Body, form: dict[str, str]) -> dict[str, Any]:
    """A page form's fields (all text) as the body `body` declares: empty
    optional fields left out, integers converted, anything else ignored
    (the CSRF token, the button); then checked like a JSON body."""
    out: dict[str, Any] = {}
    for name, f in body.fields.items():
        text = form.get(name, "").strip()
        if not text:
            continue
        if f.type == "integer":
            try:
                out[name] = int(text)
            except ValueError:
                raise HttpError(400, f"{name} must be a whole number", field=name)
        elif f.type == "boolean":
            out[name] = text.lower() in ("1", "on", "true", "yes")
        else:
            out[name] = text
    return body.check(out)


def send_json(request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json; charset=utf-8")
    request.setHeader("cache-control", "no-store")
    request.setHeader("x-content-type-options", "nosniff")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def read_form(request) -> dict[str, str]:
    """A urlencoded form's fields (first value of each), or HttpError."""
    if too_large(request):
        raise HttpError(413, f"the form is over {request.max_body} bytes")
    out = {}
    for key, values in (request.args or {}).items():
        try:
            out[key.decode("utf-8")] = values[0].decode("utf-8") if values else ""
        except UnicodeDecodeError:
            raise HttpError(400, "the form is not UTF-8")
    return out
