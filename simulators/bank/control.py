"""HTTP control API of the bank simulator (JSON, klein).

    GET    /cards                      all cards
    POST   /cards                      {pan, expiry, type, balance, limit, status} -> 201
    GET    /cards/<pan>                balance, limit, status and movements
    PATCH  /cards/<pan>                {balance?, limit?, status?, expiry?}
    DELETE /cards/<pan>
    GET    /faults                     current faults
    POST   /faults                     set faults (see simulators.bank.faults.Faults)
    DELETE /faults                     clear all faults
    GET    /messages?limit=N           traffic record, newest last
    POST   /settlement-file            {date: "YYYY-MM-DD", path?: dir} -> {"path"} when
                                       written to the settlement directory (or `path`, a
                                       directory inside it), else the CSV body
Bad JSON or bad values get 400 with {"error": ...}; a `path` leaving the
settlement directory (absolute, `..`, a symbolic link) 403. Requests with a
body must be `Content-Type: application/json` (415) and name this API's host
(421): see simulators.control_guard.
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from klein import Klein

from simulators.bank.accounts import CardDataError, card_from_json, update_card
from simulators.bank.faults import FaultError
from simulators.bank.settlement import UnsafePath, confined_directory, settlement_csv, write_settlement_file

if TYPE_CHECKING:
    from simulators.bank.simulator import BankSimulator

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadRequest(ValueError):
    pass


def _json(request, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8")


def _body(request) -> Any:
    raw = request.content.read()
    try:
        return json.loads(raw.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None


def control_app(sim: "BankSimulator") -> Klein:
    app = Klein()

    @app.handle_errors(BadRequest, CardDataError, FaultError)
    def bad_request(request, failure):
        return _json(request, {"error": str(failure.value)}, 400)

    @app.route("/cards", methods=["GET"])
    def list_cards(request):
        return _json(request, [c.to_json(movements=False) for c in sim.issuer.cards.values()])

    @app.route("/cards", methods=["POST"])
    def create_card(request):
        card = card_from_json(_body(request))
        if card.pan in sim.issuer.cards:
            return _json(request, {"error": f"card {card.masked} exists"}, 409)
        sim.issuer.add_card(card)
        return _json(request, card.to_json(), 201)

    @app.route("/cards/<pan>", methods=["GET"])
    def get_card(request, pan):
        card = sim.issuer.cards.get(pan)
        if card is None:
            return _json(request, {"error": "no such card"}, 404)
        return _json(request, card.to_json())

    @app.route("/cards/<pan>", methods=["PATCH"])
    def patch_card(request, pan):
        card = sim.issuer.cards.get(pan)
        if card is None:
            return _json(request, {"error": "no such card"}, 404)
        update_card(card, _body(request))
        return _json(request, card.to_json())

    @app.route("/cards/<pan>", methods=["DELETE"])
    def delete_card(request, pan):
        if pan not in sim.issuer.cards:
            return _json(request, {"error": "no such card"}, 404)
        sim.issuer.remove_card(pan)
        return _json(request, {"deleted": True})

    @app.route("/faults", methods=["GET"])
    def get_faults(request):
        return _json(request, sim.faults.to_json())

    @app.route("/faults", methods=["POST"])
    def set_faults(request):
        sim.faults.update(_body(request))
        return _json(request, sim.faults.to_json())

    @app.route("/faults", methods=["DELETE"])
    def clear_faults(request):
        sim.faults.clear()
        return _json(request, sim.faults.to_json())

    @app.route("/messages", methods=["GET"])
    def messages(request):
        raw = request.args.get(b"limit", [b"200"])[0]
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        records = list(sim.messages)
        return _json(request, records[-limit:] if limit > 0 else [])

    @app.route("/settlement-file", methods=["POST"])
    def settlement_file(request):
        body = _body(request)
        if not isinstance(body, dict) or not _DATE.match(str(body.get("date", ""))):
            raise BadRequest("date must be YYYY-MM-DD")
        rows = sim.settlement_rows(body["date"])
        sub = body.get("path")
        if sub is not None and not isinstance(sub, str):
            raise BadRequest("path must be a string")
        if sub and not sim.settlement_dir:
            return _json(request, {"error": "no settlement directory configured: path is refused"}, 403)
        try:
            directory = confined_directory(sim.settlement_dir, sub) if sim.settlement_dir else None
        except UnsafePath as exc:
            return _json(request, {"error": str(exc)}, 403)
        if directory:
            path = write_settlement_file(rows, directory, body["date"], sim.bank_code)
            return _json(request, {"path": str(path), "rows": len(rows)})
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        return settlement_csv(rows).encode("utf-8")

    return app
