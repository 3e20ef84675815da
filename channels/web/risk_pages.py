"""Risk review on the web (operations admins only): `/ops/risk` lists the
open cases (held operations and alerts, oldest first) with the rules and
the figures that hit, and the latest decided ones; a form per open case
releases or refuses a hold, or closes an alert as reviewed, with a reason.
The JSON API is `GET /api/v1/ops/risk` and `POST /api/v1/ops/risk/decide`
(declared in ROUTES, joined to api.ROUTES in app.py like stats_pages).

The decision itself (ledger, case, audit row, SMS in one transaction, once)
is PaymentService.decide_risk_case's; the page and the API only check the
input and say what happened. The case travels in the body, not the path:
the operation is a state change, and a body field has a declared type.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from channels.web.http import Body, Field, HttpError, from_form
from channels.web.routes import ApiRoute
from telecom_pay.money import format_amount
from telecom_pay.risk.cases import DECISIONS
from telecom_pay.service.risk_review import MAX_REASON, Reviewer, RiskCaseError
from telecom_pay.webusers import OPS_ADMIN

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

MAX_CASE_ID = 2 ** 53              # beyond any id, and within every database's integer
DECIDE_BODY = Body({
    "case_id": Field("integer", description=f"the case (1..{MAX_CASE_ID})"),
    "decision": Field("string", enum=tuple(DECISIONS),
                      description="release or refuse a hold; review closes an alert"),
    "reason": Field("string", max_length=MAX_REASON, description="why (required, shown in the audit log)"),
})
RULE_TITLES = {"large_amount": "Large amount", "velocity": "Velocity", "structuring": "Structuring",
               "fan_in": "Many senders into one wallet", "new_account": "New account moving a lot"}

MONEY_FIGURES = {"large_amount": ("amount", "threshold"), "structuring": ("limit", "from"),
                 "new_account": ("moved", "threshold")}


def figure_text(figure: dict) -> str:
    """A hit's figures for people: amounts in yuan, counts as they are."""
    money = MONEY_FIGURES.get(figure.get("rule"), ())
    return ", ".join(f"{k.replace('_', ' ')} {format_amount(v) if k in money else v}"
                     for k, v in figure.items() if k not in ("rule", "action"))


def _reviewer(ctx: "WebContext") -> Reviewer:
    return Reviewer(ctx.username, ctx.role, ctx.address)


async def decide(web: "WebApp", ctx: "WebContext", body: dict) -> dict:
    case_id = body["case_id"]
    if not 1 <= case_id <= MAX_CASE_ID:
        raise HttpError(400, f"case_id must be between 1 and {MAX_CASE_ID}", field="case_id")
    try:
        return await web.core.service.decide_risk_case(case_id, body["decision"], reason=body["reason"],
                                                       by=_reviewer(ctx))
    except RiskCaseError as exc:
        extra = {"case": exc.case} if exc.case is not None else {}
        raise HttpError(exc.status, exc.message, **extra)


async def list_cases(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    return 200, await web.core.service.risk_cases()


async def decide_case(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    return 200, await decide(web, ctx, body)


_CASE = {"type": "object", "required": ["case_id", "ref", "kind", "status", "rules", "amount"],
         "properties": {"case_id": {"type": "integer"}, "ref": {"type": "string"},
                        "operation": {"type": "string"}, "amount": {"type": "integer", "description": "fen"},
                        "kind": {"type": "string", "enum": ["hold", "alert"]},
                        "status": {"type": "string", "enum": ["held", "released", "refused", "alert", "reviewed"]},
                        "rules": {"type": "array", "items": {"type": "string"}},
                        "figures": {"type": "array", "items": {"type": "object"}}}}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/ops/risk", list_cases,
             "Risk cases (operations admins only): the open ones (held operations and alerts, oldest first) "
             "and the latest decided ones, each with the rules that hit and their figures.",
             roles=(OPS_ADMIN,),
             response_schema={"type": "object", "required": ["open", "decided"],
                              "properties": {"open": {"type": "array", "items": _CASE},
                                             "decided": {"type": "array", "items": _CASE}}}),
    ApiRoute("POST", "/api/v1/ops/risk/decide", decide_case,
             "Decide a risk case (operations admins only): release a held operation (the payee is paid), "
             "refuse it (the payer's money is free again) or close an alert as reviewed. Audited; the payer "
             "is told by SMS. A case is decided once.",
             roles=(OPS_ADMIN,), body=DECIDE_BODY,
             responses={400: "bad input: no reason, a case_id out of range", 404: "no such case",
                        409: "decided already, or the wrong decision for the case's kind"},
             response_schema=_CASE),
)


class RiskPages:
    def __init__(self, web: "WebApp"):
        self.web = web
        pages = web.pages
        k = web.klein
        k.route("/ops/risk", methods=["GET"], endpoint="page risk")(pages._page(self.risk_page, roles=(OPS_ADMIN,)))
        k.route("/ops/risk/decide", methods=["POST"], endpoint="page risk decide")(
            pages._page(self.decide_form, roles=(OPS_ADMIN,), csrf=True))

    async def risk_page(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                        notice: str | None = None, reason: str = "") -> bytes:
        cases = await self.web.core.service.risk_cases()
        return self.web.pages.render(request, "ops_risk.html", status, ctx=ctx, cases=cases, error=error,
                                     notice=notice, titles=RULE_TITLES, reason=reason,
                                     figure_text=figure_text)

    async def decide_form(self, request, ctx, form) -> bytes:
        try:
            body = from_form(DECIDE_BODY, form)
            case = await decide(self.web, ctx, body)
        except HttpError as exc:
            message = exc.message[:1].upper() + exc.message[1:]
            return await self.risk_page(request, ctx, form, status=exc.status, error=message + ".",
                                        reason=form.get("reason", ""))
        done = {"released": f"released: paid as {case.get('paid_ref')}", "refused": "refused: the money is free again",
                "reviewed": "closed as reviewed"}[case["status"]]
        return await self.risk_page(request, ctx, form,
                                    notice=f"Case {case['case_id']} ({case['ref']}) {done}. The payer is told by SMS."
                                    if case["kind"] == "hold" else f"Case {case['case_id']} ({case['ref']}) {done}.")
