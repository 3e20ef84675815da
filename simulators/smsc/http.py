"""JSON control API of the SMSC simulator (Klein), for testers, the CLI and the web handset.

    GET    /                                  the web handset (an HTML page over this API)
    GET    /handsets                          registered handsets
    POST   /handsets                          {"msisdn": ..., "language": ...}
    GET    /handsets/{msisdn}                 one handset: inbox, sent, USSD screens
    POST   /handsets/{msisdn}/mo              {"text": ..., "wait": s}: send an SMS, wait up to s for the ack
    GET    /handsets/{msisdn}/inbox           ?since=N&wait=s: messages from index N, long-polling up to s
    POST   /handsets/{msisdn}/ussd            {"text": ..., "wait": s, "dial"?: true, "answer"?: true}:
                                              dial (no open session, or "dial" to hang up the open one
                                              first) or answer ("answer": 409 if none is open)
    POST   /handsets/{msisdn}/ussd/hangup     the phone ends its session (user abort to the platform)
    POST   /handsets/{msisdn}/ussd/release    {"reason"?: "released" | "timeout"}: the network ends it
    GET    /handsets/{msisdn}/ussd            the USSD screens and session
    POST   /handsets/{msisdn}/call            {"keys": "1,2#,123456#", "wait": s}: call the IVR through the
                                              Asterisk caller simulator, pressing the keys; returns what was
                                              heard and pressed, in order (504 when the call outlives wait)
    GET    /traffic                           ?limit=&bind_id=&command=&direction=
    GET    /faults | POST /faults {...} | DELETE /faults[?kind=] | DELETE /faults/{id}
           POST /faults {"kind": "close" | "unbind", "system_id"?, "bind_id"?}: cut connections now,
           or ask the ESMEs to unbind
    GET    /binds
    GET    /settings | POST /settings {"message_reference": false}: whether handsets send a TP-MR

Errors are JSON objects {"error": "..."} with 400 (bad request), 404, 409
(USSD state) or 504 (timed out waiting for the platform); 415 for a body
that is not `Content-Type: application/json`, 421 for a Host header naming
another site (simulators.control_guard).
"""
from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.server import Site

from simulators.control_guard import GuardedSite, endpoint_hosts
from .faults import FAULT_KINDS
from .handsets import UssdError
from .simulator import DeliveryFailed, SmscSimulator
from .webpage import HANDSET_PAGE

__all__ = ["SmscControlApi", "control_site"]

DEFAULT_WAIT = 10.0
MAX_WAIT = 300.0


class _HttpError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _json(request, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _body(request) -> dict[str, Any]:
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _HttpError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _HttpError(400, "request body must be a JSON object")
    return data


def _arg(request, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _number(value: Any, name: str, default: float, maximum: float = MAX_WAIT) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _HttpError(400, f"{name} must be a number") from None
    if not 0 <= number <= maximum:
        raise _HttpError(400, f"{name} must be between 0 and {maximum:g}")
    return number


def _text(data: dict[str, Any]) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise _HttpError(400, "'text' (a string) is required")
    return text


class SmscControlApi:
    """Routes over one `SmscSimulator`."""

    app = Klein()

    def __init__(self, simulator: SmscSimulator):
        self.sim = simulator

    @app.handle_errors(_HttpError)
    def _http_error(self, request, failure):
        return _json(request, {"error": str(failure.value)}, failure.value.code)

    def _handset(self, msisdn: str):
        try:
            return self.sim.handset(msisdn)
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from None

    def _known_handset(self, msisdn: str):
        try:
            key = self.sim.canonical_msisdn(msisdn)
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from None
        handset = self.sim.handsets.get(key)
        if handset is None:
            raise _HttpError(404, f"no handset {msisdn}")
        return handset

    @app.route("/", methods=["GET"])
    def handset_page(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", b"default-src 'self' 'unsafe-inline'")
        return HANDSET_PAGE.encode("utf-8")

    # --- handsets -------------------------------------------------------------------

    @app.route("/handsets", methods=["GET"])
    def list_handsets(self, request):
        return _json(request, {"handsets": [h.to_json() for h in self.sim.handsets.values()]})

    @app.route("/handsets", methods=["POST"])
    def add_handset(self, request):
        data = _body(request)
        msisdn = data.get("msisdn")
        language = data.get("language")
        if not isinstance(msisdn, str) or (language is not None and not isinstance(language, str)):
            raise _HttpError(400, "'msisdn' (a string) is required; 'language' is optional")
        try:
            handset = self.sim.handset(msisdn, language)
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from None
        return _json(request, handset.to_json(), 201)

    @app.route("/handsets/<msisdn>", methods=["GET"])
    def show_handset(self, request, msisdn):
        handset = self._known_handset(msisdn)
        body = handset.to_json()
        body["inbox"] = [m.to_json() for m in handset.inbox]
        body["sent"] = [m.to_json() for m in handset.sent]
        body["ussd"] = [s.to_json() for s in handset.ussd_screens]
        return _json(request, body)

    @app.route("/handsets/<msisdn>/mo", methods=["POST"])
    @defer.inlineCallbacks
    def send_mo(self, request, msisdn):
        data = _body(request)
        text = _text(data)
        wait = _number(data.get("wait"), "wait", DEFAULT_WAIT)
        destination = data.get("destination_addr")
        if destination is not None and not (isinstance(destination, str) and destination.isdigit()):
            raise _HttpError(400, "destination_addr must be digits")
        handset = self._handset(msisdn)
        index = len(handset.inbox)
        try:
            sending = handset.send(text, destination)
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from None
        record = handset.sent[-1]
        try:
            yield _within(self.sim, sending, wait)
        except defer.TimeoutError:
            return _json(request, {"acked": False, "queued": True, "inbox_index": index, "sent": record.to_json()}, 202)
        except DeliveryFailed as exc:
            return _json(request, {"acked": False, "error": str(exc), "sent": record.to_json()}, 502)
        return _json(request, {"acked": True, "inbox_index": index, "sent": record.to_json()})

    @app.route("/handsets/<msisdn>/inbox", methods=["GET"])
    @defer.inlineCallbacks
    def inbox(self, request, msisdn):
        handset = self._known_handset(msisdn)
        try:
            since = int(_arg(request, "since") or 0)
        except ValueError:
            raise _HttpError(400, "since must be an integer") from None
        wait = _number(_arg(request, "wait"), "wait", 0.0)
        if since < 0:
            raise _HttpError(400, "since must not be negative")
        if wait:
            yield handset.wait_for_inbox(since, wait)
        messages = handset.inbox[since:]
        return _json(request, {"msisdn": handset.msisdn, "since": since, "next": since + len(messages),
                               "inbox": [m.to_json() for m in messages]})

    @app.route("/handsets/<msisdn>/ussd", methods=["POST"])
    @defer.inlineCallbacks
    def ussd(self, request, msisdn):
        data = _body(request)
        text = _text(data)
        wait = _number(data.get("wait"), "wait", DEFAULT_WAIT)
        handset = self._handset(msisdn)
        if data.get("dial"):
            handset.hang_up()
        session = handset.ussd_session
        try:
            if (session is None or not session.open) and not data.get("answer"):
                screen = handset.dial_ussd(text, timeout=wait or DEFAULT_WAIT)
            else:
                screen = handset.ussd_reply(text, timeout=wait or DEFAULT_WAIT)
        except UssdError as exc:
            raise _HttpError(409, str(exc)) from None
        try:
            text = yield screen
        except defer.TimeoutError:
            return _json(request, {"error": f"no USSD reply within {wait:g}s"}, 504)
        last = handset.ussd_screens[-1]
        return _json(request, {"text": text, "ended": last.ended, "reason": last.reason, "screen": last.to_json()})

    @app.route("/handsets/<msisdn>/call", methods=["POST"])
    def call(self, request, msisdn):
        from simulators.asterisk.caller import CallScript, place_call
        from simulators.asterisk.cli import parse_keys
        from telecom_pay.aio import as_deferred
        data = _body(request)
        keys = data.get("keys", "")
        if isinstance(keys, list):
            keys = ",".join(str(k) for k in keys)
        if not isinstance(keys, str):
            raise _HttpError(400, "keys must be text such as \"1,2#,123456#\" or a list")
        try:
            script = CallScript(keys=parse_keys(keys))
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from None
        wait = _number(data.get("wait"), "wait", 60.0, maximum=300.0)
        self._handset(msisdn)

        async def run():
            try:
                call = await place_call(self.sim.reactor, self.sim.ivr_endpoint, msisdn, script,
                                        timeout=wait)
            except TimeoutError as exc:
                return _json(request, {"error": str(exc)}, 504)
            except Exception as exc:                  # nobody listens: say so, do not 500
                return _json(request, {"error": f"the IVR at {self.sim.ivr_endpoint} did not answer: "
                                                f"{type(exc).__name__}"}, 502)
            return _json(request, {"log": [list(entry) for entry in call.log], "hung_up_by": call.hung_up_by,
                                   "variables": dict(call.variables)})
        return as_deferred(run())

    @app.route("/handsets/<msisdn>/ussd/hangup", methods=["POST"])
    def ussd_hangup(self, request, msisdn):
        return _json(request, {"hung_up": self._known_handset(msisdn).hang_up()})

    @app.route("/handsets/<msisdn>/ussd/release", methods=["POST"])
    def ussd_release(self, request, msisdn):
        data = _body(request)
        reason = data.get("reason", "released")
        if reason not in ("released", "timeout"):
            raise _HttpError(400, "reason: released or timeout")
        handset = self._known_handset(msisdn)
        released = self.sim.release_ussd(handset.msisdn, op=0x21 if reason == "timeout" else 0x20, reason=reason)
        return _json(request, {"released": released})

    @app.route("/handsets/<msisdn>/ussd", methods=["GET"])
    def ussd_screens(self, request, msisdn):
        handset = self._known_handset(msisdn)
        session = handset.ussd_session
        return _json(request, {
            "msisdn": handset.msisdn,
            "session": None if session is None else {"code": session.code, "open": session.open,
                                                     "number": session.number},
            "screens": [s.to_json() for s in handset.ussd_screens],
        })

    # --- traffic, faults, binds -------------------------------------------------------

    @app.route("/traffic", methods=["GET"])
    def traffic(self, request):
        try:
            limit = int(_arg(request, "limit") or 100)
        except ValueError:
            raise _HttpError(400, "limit must be an integer") from None
        records = self.sim.traffic.records(limit=max(limit, 0), bind_id=_arg(request, "bind_id"),
                                           command=_arg(request, "command"), direction=_arg(request, "direction"))
        return _json(request, {"total": self.sim.traffic.total, "records": [r.to_json() for r in records]})

    @app.route("/faults", methods=["GET"])
    def list_faults(self, request):
        return _json(request, {"faults": [f.to_json() for f in self.sim.faults.active()],
                               "kinds": list(FAULT_KINDS) + ["close", "unbind"]})

    @app.route("/faults", methods=["POST"])
    def add_fault(self, request):
        data = _body(request)
        if data.get("kind") in ("close", "unbind"):
            kind = data["kind"]
            unknown = set(data) - {"kind", "system_id", "bind_id"}
            if unknown:
                raise _HttpError(400, f"unknown fields for {kind}: {', '.join(sorted(unknown))}")
            action = self.sim.close_binds if kind == "close" else self.sim.unbind_binds
            count = action(system_id=data.get("system_id"), bind_id=data.get("bind_id"))
            return _json(request, {"kind": kind, "binds": count})
        try:
            fault = self.sim.faults.add_from_json(data)
        except (TypeError, ValueError) as exc:
            raise _HttpError(400, str(exc)) from None
        return _json(request, fault.to_json(), 201)

    @app.route("/faults", methods=["DELETE"])
    def clear_faults(self, request):
        kind = _arg(request, "kind")
        return _json(request, {"cleared": self.sim.faults.clear(kind)})

    @app.route("/faults/<int:fault_id>", methods=["DELETE"])
    def remove_fault(self, request, fault_id):
        if not self.sim.faults.remove(fault_id):
            raise _HttpError(404, f"no fault {fault_id}")
        return _json(request, {"removed": fault_id})

    @app.route("/binds", methods=["GET"])
    def binds(self, request):
        return _json(request, {"binds": [b.to_json() for b in self.sim.binds]})

    @app.route("/settings", methods=["GET"])
    def settings(self, request):
        return _json(request, {"message_reference": self.sim.config.message_reference})

    @app.route("/settings", methods=["POST"])
    def change_settings(self, request):
        data = _body(request)
        unknown = set(data) - {"message_reference"}
        if unknown:
            raise _HttpError(400, f"unknown settings: {', '.join(sorted(unknown))}")
        if "message_reference" in data:
            if not isinstance(data["message_reference"], bool):
                raise _HttpError(400, "message_reference must be true or false")
            self.sim.config.message_reference = data["message_reference"]
        return _json(request, {"message_reference": self.sim.config.message_reference})


def _within(sim: SmscSimulator, d: defer.Deferred, timeout: float) -> defer.Deferred:
    """``d``, or a TimeoutError after ``timeout`` seconds, without cancelling ``d``."""
    result: defer.Deferred = defer.Deferred()

    def fire(value):
        if not result.called:
            if timer.active():
                timer.cancel()
            if isinstance(value, Failure):
                result.errback(value)
            else:
                result.callback(value)
        return None

    def time_out():
        if not result.called:
            result.errback(defer.TimeoutError(f"no answer within {timeout:g}s"))

    timer = sim.clock.callLater(timeout, time_out)
    d.addBoth(fire)
    return result


def control_site(simulator: SmscSimulator, hosts: frozenset[str] = endpoint_hosts("tcp:0")) -> Site:
    """A twisted.web Site serving the control API of ``simulator`` under the host names ``hosts``
    (JSON bodies only; see simulators.control_guard)."""
    return GuardedSite(SmscControlApi(simulator).app.resource(), hosts)
