"""Operations statistics on the web (operations admins only): the page
`/ops/stats?from=&to=` with tables and server-drawn SVG charts, its CSV
download `/ops/stats.csv`, and the JSON `GET /api/v1/stats` (declared in
ROUTES, so the OpenAPI document describes it). The figures are
telecom_pay.stats's, the same the `telecom-pay stats` command prints.

Dates are local business days, both included; a missing one is today.
A bad date or range is a 400: JSON for the API and the CSV (what a script
reads), the page itself shows the form again with the error.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from channels.web.http import HttpError, send_json
from channels.web.routes import ApiRoute
from channels.web.svgchart import bar_chart, column_chart
from telecom_pay import stats
from telecom_pay.business_time import business_day
from telecom_pay.ledger.ledger import utcnow
from telecom_pay.money import format_amount
from telecom_pay.webusers import OPS_ADMIN

if TYPE_CHECKING:
    from channels.web.app import WebApp

RANGE_PARAMETERS = tuple(
    {"name": name, "in": "query", "required": False,
     # empty is what the page's form sends for a field left blank: today
     "schema": {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}]},
     "description": f"first/last local business day (YYYY-MM-DD, {stats.MAX_DAYS} days at most); "
                    "missing or empty: today"}
    for name in ("from", "to"))


def _tz(web: "WebApp") -> ZoneInfo:
    return ZoneInfo(web.core.settings.timezone)


def _arg(request, name: str) -> str | None:
    values = (request.args or {}).get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, f"{name} is not a date (YYYY-MM-DD)")


def requested_range(web: "WebApp", request) -> tuple[date, date]:
    today = business_day(getattr(web.core.ledger, "clock", utcnow)(), _tz(web))
    try:
        return stats.parse_range(_arg(request, "from"), _arg(request, "to"), today=today)
    except stats.StatsError as exc:
        raise HttpError(400, str(exc), field="from" if str(exc).startswith("from") else "to")


async def report_for(web: "WebApp", request) -> dict[str, Any]:
    first, last = requested_range(web, request)
    return await stats.statistics(web.core.ledger, first, last, _tz(web))


async def get_stats(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    return 200, await report_for(web, request)


_STATS_SCHEMA = {"type": "object", "required": ["from", "to", "timezone", "days", "total"],
                 "properties": {"from": {"type": "string", "format": "date"},
                                "to": {"type": "string", "format": "date"},
                                "timezone": {"type": "string"},
                                "days": {"type": "array", "items": {"type": "object"},
                                         "description": "one object per local day: date and its figures"},
                                "total": {"type": "object", "description": "the figures of the whole range"}}}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/stats", get_stats,
             "Operations statistics per local business day and for the range (operations admins only): "
             "accounts opened by channel, transactions by kind, channel and state (count, amount, fee in "
             "minor units), failure reasons, bank response codes, active subscribers, SMS, USSD and IVR.",
             roles=(OPS_ADMIN,), parameters=RANGE_PARAMETERS,
             responses={400: "a date is not YYYY-MM-DD, to is before from, or the range is too long"},
             response_schema=_STATS_SCHEMA),
)


def csv_text(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=stats.CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in stats.flat_rows(report):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()


def _cell(value):
    # a cell a spreadsheet would run as a formula is quoted as text
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _posted(transactions: list[dict]) -> list[dict]:
    return [t for t in transactions if t["state"] == "posted"]


def page_values(report: dict[str, Any]) -> dict[str, Any]:
    """What the template shows: the total's tables and the charts."""
    total = report["total"]
    days = report["days"]
    by_kind: dict[str, int] = defaultdict(int)
    for t in _posted(total["transactions"]):
        by_kind[t["kind"]] += t["amount"]
    fails: dict[str, int] = defaultdict(int)
    for f in total["failures"]["audited"]:
        fails[f["reason"]] += f["count"]
    for v in total["failures"]["voided"]:
        fails[f"voided: {v['reason']}"] += v["count"]
    charts = [
        column_chart("Posted transactions per day", [(d["date"][5:], sum(t["count"] for t in _posted(
            d["transactions"]))) for d in days]),
        column_chart("Posted amount per day", [(d["date"][5:], sum(t["amount"] for t in _posted(d["transactions"])))
                                               for d in days], fmt=format_amount),
        column_chart("Active subscribers per day", [(d["date"][5:], d["active_subscribers"]) for d in days]),
        bar_chart("Posted amount by kind", sorted(by_kind.items(), key=lambda kv: -kv[1]), fmt=format_amount),
        bar_chart("Accounts opened by channel", list(total["accounts_opened"].items())),
        bar_chart("Failure reasons", sorted(fails.items(), key=lambda kv: -kv[1])),
    ]
    return {"report": report, "total": total, "charts": charts, "money": format_amount}


class StatsPages:
    def __init__(self, web: "WebApp"):
        self.web = web
        pages = web.pages
        k = web.klein
        k.route("/ops/stats", methods=["GET"], endpoint="page stats")(
            pages._page(self.stats_page, roles=(OPS_ADMIN,)))
        k.route("/ops/stats.csv", methods=["GET"], endpoint="page stats csv")(
            pages._page(self.stats_csv, roles=(OPS_ADMIN,)))

    async def stats_page(self, request, ctx, form) -> bytes:
        pages = self.web.pages
        values = {"ctx": ctx, "from_": _arg(request, "from") or "", "to": _arg(request, "to") or ""}
        try:
            report = await report_for(self.web, request)
        except HttpError as exc:
            return pages.render(request, "stats.html", exc.status, error=exc.message, report=None, **values)
        values.update(from_=report["from"], to=report["to"])
        return pages.render(request, "stats.html", **values, **page_values(report),
                            csv_query=f"from={report['from']}&to={report['to']}")

    async def stats_csv(self, request, ctx, form) -> bytes:
        try:
            report = await report_for(self.web, request)
        except HttpError as exc:
            return send_json(request, exc.status, exc.body())
        request.setResponseCode(200)
        request.setHeader("content-type", "text/csv; charset=utf-8")
        request.setHeader("content-disposition",
                          f'attachment; filename="telecom-pay-stats-{report["from"]}-{report["to"]}.csv"')
        request.setHeader("cache-control", "no-store")
        request.setHeader("x-content-type-options", "nosniff")
        return csv_text(report).encode("utf-8")
