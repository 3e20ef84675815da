"""Audit search on the web (operations admins only): the page `/ops/audit`
and `GET /api/v1/ops/audit` (declared in ROUTES with its query parameters).
The query is telecom_pay.audit_search's.

Every search is itself audited (`ops_audit_search`: the web user, role,
address and the filters, the number masked), on the subscriber's account
when one is named: a member of staff reading a person's trail is a fact
the trail keeps, as the agent console's look-up is. The page sends its
filters in a POST form (with the CSRF token), so a subscriber's number
stays out of URLs and access logs; the API takes them as query parameters.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from channels.web.http import HttpError
from channels.web.routes import ApiRoute
from telecom_pay.accounts import audit
from telecom_pay.audit_search import (DEFAULT_LIMIT, MAX_LIMIT, AuditPage, AuditQuery, AuditSearchError,
                                      known_actions, parse_query, search)
from telecom_pay.webusers import OPS_ADMIN

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

FILTERS = ("msisdn", "actor", "action", "from", "to", "limit", "before")
ACTIONS_TTL = 300.0             # seconds the form's list of actions is kept

_TEXT = {"type": "string", "maxLength": 64}
PARAMETERS = (
    {"name": "msisdn", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 32},
     "description": "subscriber number, local (13800138000) or E.164 (+8613800138000); every wallet it had"},
    {"name": "actor", "in": "query", "required": False, "schema": _TEXT,
     "description": "who acted, exactly as recorded (a web user, agent:CODE, a number's channel actor)"},
    {"name": "action", "in": "query", "required": False, "schema": _TEXT, "description": "the action, exactly"},
    {"name": "from", "in": "query", "required": False, "schema": {"type": "string", "format": "date"},
     "description": "first local business day (YYYY-MM-DD, the platform's time zone), included"},
    {"name": "to", "in": "query", "required": False, "schema": {"type": "string", "format": "date"},
     "description": "last local business day (YYYY-MM-DD), included"},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
     "description": f"rows per page, at most {MAX_LIMIT}"},
    {"name": "before", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
     "description": "next page: the next_before of the previous page"},
)

_ROW = {"type": "object", "required": ["id", "at", "local_time", "actor", "channel", "action", "details"],
        "properties": {"id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
                       "local_time": {"type": "string"}, "actor": {"type": "string"},
                       "channel": {"type": "string"}, "action": {"type": "string"},
                       "account_id": {"type": ["integer", "null"]},
                       "details": {"type": "object", "description": "as written, secrets blanked"}}}
_SCHEMA = {"type": "object", "required": ["rows", "next_before", "timezone"],
           "properties": {"rows": {"type": "array", "items": _ROW},
                          "next_before": {"type": ["integer", "null"],
                                          "description": "pass as before for the next page; null on the last"},
                          "timezone": {"type": "string"}}}


def _tz(web: "WebApp") -> ZoneInfo:
    return ZoneInfo(web.core.settings.timezone)


def query_args(request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in FILTERS:
        values = (request.args or {}).get(name.encode())
        if values:
            try:
                out[name] = values[0].decode("utf-8")
            except UnicodeDecodeError:
                raise HttpError(400, f"{name} is not UTF-8", field=name)
    return out


def parsed(web: "WebApp", params: dict[str, str]) -> AuditQuery:
    try:
        return parse_query(params, region=web.core.settings.region)
    except AuditSearchError as exc:
        raise HttpError(400, str(exc), field=exc.field)


async def run_search(web: "WebApp", ctx: "WebContext", query: AuditQuery) -> AuditPage:
    """The search, then its own audit row (written after, so a search never
    finds itself)."""
    try:
        page = await search(web.core.ledger.read, query, _tz(web))
    except AuditSearchError as exc:
        raise HttpError(400, str(exc), field=exc.field)

    async def write(conn):
        await audit(conn, actor=ctx.username[:64], channel="web", action="ops_audit_search",
                    account_id=page.account_ids[-1] if page.account_ids else None, role=ctx.role,
                    address=ctx.address, filters=query.printable(), results=len(page.rows))
    await web.core.ledger.write(write)
    return page


async def get_audit(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    page = await run_search(web, ctx, parsed(web, query_args(request)))
    return 200, {"rows": page.rows, "next_before": page.next_before, "timezone": web.core.settings.timezone}


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/ops/audit", get_audit,
             "Search the audit log (operations admins only): by subscriber number, actor, action and local "
             "business day, newest first, a page at a time. The search is itself audited (ops_audit_search).",
             roles=(OPS_ADMIN,), parameters=PARAMETERS,
             responses={400: "a number that is not a mobile number, a date that is not YYYY-MM-DD, to before "
                             "from, limit over the cap, or a before that names no row"},
             response_schema=_SCHEMA),
)


def pretty(details: dict) -> str:
    """Details as indented JSON, Chinese names as they are (the template escapes it)."""
    return json.dumps(details, ensure_ascii=False, indent=1, sort_keys=True, default=str)


class AuditPages:
    def __init__(self, web: "WebApp"):
        self.web = web
        self._actions: tuple[float, list[str]] | None = None
        pages = web.pages
        web.klein.route("/ops/audit", methods=["GET"], endpoint="page audit")(
            pages._page(self.audit_form, roles=(OPS_ADMIN,)))
        web.klein.route("/ops/audit", methods=["POST"], endpoint="page audit post")(
            pages._page(self.audit_search, roles=(OPS_ADMIN,), csrf=True))

    async def actions(self) -> list[str]:
        now = time.monotonic()
        if self._actions is None or now - self._actions[0] > ACTIONS_TTL:
            self._actions = (now, await known_actions(self.web.core.ledger.read))
        return self._actions[1]

    async def _render(self, request, ctx, form: dict, *, status: int = 200, error: str | None = None,
                      page: AuditPage | None = None) -> bytes:
        return self.web.pages.render(request, "ops_audit.html", status, ctx=ctx, form=form, error=error,
                                     page=page, actions=await self.actions(), max_limit=MAX_LIMIT,
                                     timezone=self.web.core.settings.timezone, pretty=pretty)

    async def audit_form(self, request, ctx, form) -> bytes:
        return await self._render(request, ctx, {})

    async def audit_search(self, request, ctx, form) -> bytes:
        params = {k: form.get(k, "") for k in FILTERS}
        try:
            page = await run_search(self.web, ctx, parsed(self.web, params))
        except HttpError as exc:
            return await self._render(request, ctx, params, status=exc.status, error=exc.message)
        return await self._render(request, ctx, params, page=page)
