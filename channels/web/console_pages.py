"""The agent console's pages: the search form with the callers the IVR is
handing over, and one subscriber's page with a form per operation.

The number an agent looks up travels in a POST body (with the CSRF
token), never in a URL: URLs end up in access logs and browser history,
and every look-up is an audited act, not something a reload or a link
prefetch should repeat. The forms run the same operations as the API
(channels/web/console.py), so a form and an API call cannot differ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from channels.web import console
from channels.web.http import HttpError, from_form
from telecom_pay.money import format_amount
from telecom_pay.msisdn import local_form

if TYPE_CHECKING:
    from channels.web.app import WebContext
    from channels.web.pages import Pages


class ConsolePages:
    def __init__(self, pages: "Pages"):
        self.pages = pages
        self.web = pages.web
        region = self.web.core.settings.region
        pages.env.filters["yuan"] = lambda fen: format_amount(int(fen)) if fen is not None else ""
        pages.env.filters["local_number"] = lambda m: local_form(m, region) if m else "withheld"
        k, roles = self.web.klein, console.CONSOLE_ROLES
        k.route("/agent", methods=["GET"], endpoint="page agent")(pages._page(self.search, roles=roles))
        k.route("/agent/lookup", methods=["POST"], endpoint="page agent lookup")(
            pages._page(self.lookup, roles=roles, csrf=True))
        k.route("/agent/operation", methods=["POST"], endpoint="page agent operation")(
            pages._page(self.operation, roles=roles, csrf=True))
        k.route("/agent/handoffs/take", methods=["POST"], endpoint="page agent take")(
            pages._page(self.take, roles=roles, csrf=True))
        k.route("/agent/suspense", methods=["POST"], endpoint="page agent suspense")(
            pages._page(self.suspense, roles=console.SUPERVISORS, csrf=True))

    async def search(self, request, ctx: "WebContext", form, *, status: int = 200, error: str | None = None,
                     notice: str | None = None) -> bytes:
        code = await console.agent_code_of(self.web, ctx)
        handoffs = await console.waiting_handoffs(self.web, ctx)
        return self.pages.render(request, "agent.html", status, ctx=ctx, agent_code=code, handoffs=handoffs,
                                 error=error, notice=notice, form=form, open_op=console.BY_NAME["open"],
                                 id_types=console.ID_TYPES)

    async def subscriber(self, request, ctx: "WebContext", msisdn: str, *, status: int = 200,
                         error: str | None = None, notice: str | None = None, handoff: dict | None = None) -> bytes:
        """The subscriber's page, after an audited look-up; a number without
        an account goes back to the search (where an account can be opened)."""
        code = await console.agent_code_of(self.web, ctx)
        result = await console.lookup(self.web.core.service, msisdn, console.looker(ctx, code))
        if not result.ok:
            message = console.message_of(result)
            return await self.search(request, ctx, {"msisdn": msisdn}, status=console.status_of(result)
                                     if status == 200 else status, error=" ".join(filter(None, (error, message))),
                                     notice=notice)
        holds = await console.suspense_holds(self.web, ctx, msisdn) if ctx.role in console.SUPERVISORS else None
        return self.pages.render(request, "agent_subscriber.html", status, ctx=ctx, agent_code=code,
                                 s=result.params["subscriber"], error=error, notice=notice, handoff=handoff,
                                 ops=console.BY_NAME, id_types=console.ID_TYPES, holds=holds)

    async def lookup(self, request, ctx: "WebContext", form) -> bytes:
        try:
            body = from_form(console.msisdn_body(), form)
            msisdn = console.number(self.web, body["msisdn"])
        except HttpError as exc:
            return await self.search(request, ctx, form, status=exc.status, error=exc.message.capitalize() + ".")
        return await self.subscriber(request, ctx, msisdn)

    async def operation(self, request, ctx: "WebContext", form) -> bytes:
        op = console.BY_NAME.get(form.get("op", ""))
        if op is None:
            raise HttpError(400, "No such operation.")
        try:
            body = from_form(op.body, form)
            result, msisdn = await console.perform(self.web, ctx, op, body)
        except HttpError as exc:
            return await self._back(request, ctx, form, exc.status, exc.message.capitalize() + ".")
        text = console.message_of(result)
        if not result.ok:
            return await self._back(request, ctx, form, console.status_of(result), text)
        if op.name == "open":
            return await self.search(request, ctx, {}, notice=f"{op.title}: {text}")
        return await self.subscriber(request, ctx, msisdn, notice=f"{op.title}: {text}")

    async def _back(self, request, ctx, form, status: int, error: str) -> bytes:
        try:
            msisdn = console.number(self.web, form.get("msisdn", ""))
        except HttpError:
            return await self.search(request, ctx, form, status=status, error=error)
        if form.get("op") == "open":
            return await self.search(request, ctx, form, status=status, error=error)
        return await self.subscriber(request, ctx, msisdn, status=status, error=error)

    async def take(self, request, ctx: "WebContext", form) -> bytes:
        try:
            handoff = await console.take(self.web, ctx, from_form(console.TAKE_BODY, form)["handoff_id"])
        except HttpError as exc:
            return await self.search(request, ctx, {}, status=exc.status, error=exc.message.capitalize() + ".")
        if not handoff["msisdn"]:
            return await self.search(request, ctx, {}, notice="Caller taken; the number is withheld: ask for it.")
        return await self.subscriber(request, ctx, handoff["msisdn"], handoff=handoff)

    async def suspense(self, request, ctx: "WebContext", form) -> bytes:
        """A supervisor asks for, or (another one) approves, a payback."""
        step = {"request": console.suspense_request, "approve": console.suspense_approve}.get(form.get("step", ""))
        if step is None:
            raise HttpError(400, "No such step.")
        try:
            body = from_form(console.REF_BODY, form)
            msisdn = console.number(self.web, form.get("msisdn", ""))
            _, view = console.suspense_answer(await step(self.web, ctx, body["ref"]))
        except HttpError as exc:
            msisdn = form.get("msisdn", "")
            return await self._back(request, ctx, {"msisdn": msisdn}, exc.status, exc.message)
        return await self.subscriber(request, ctx, msisdn, notice=view["message"])
