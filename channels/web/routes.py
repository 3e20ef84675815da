"""The declaration of an API route: method, path, who may call it, its
body. The server registers its handlers from these and the OpenAPI
document is written from them, so the two cannot drift apart silently
(and a test compares the document with the router's own map)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from channels.web.http import Body

PUBLIC = None                      # roles=PUBLIC: no login needed


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str                                   # Klein/werkzeug syntax, /api/v1/...
    handler: Callable[..., Awaitable[tuple[int, Any]]]
    summary: str
    roles: tuple[str, ...] | None = PUBLIC
    body: Body | None = None
    before_password_change: bool = False        # callable while the first-login change is due
    responses: dict[int, str] = field(default_factory=dict)
    response_schema: dict | None = None
    parameters: tuple[dict, ...] = ()           # OpenAPI parameter objects (query strings)
    signed: bool = False                        # the SP payment API: a merchant's signature, no session

    @property
    def csrf(self) -> bool:
        """State-changing calls made with the session cookie carry the token."""
        return self.roles is not PUBLIC and self.method not in ("GET", "HEAD")

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", self.path)
