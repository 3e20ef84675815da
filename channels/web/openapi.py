"""The OpenAPI 3.1 document of /api/v1, written from the route declarations."""
from __future__ import annotations

from channels.web.routes import ApiRoute
from channels.web.sessions import COOKIE, CSRF_HEADER

ERROR = {"$ref": "#/components/schemas/Error"}
SIGNED_HEADERS = (("X-TP-Key", "the merchant's API key id (mk_...)"),
                  ("X-TP-Timestamp", "Unix time in seconds"),
                  ("X-TP-Nonce", "16-64 of A-Z a-z 0-9 _ -, never reused"),
                  ("X-TP-Signature", "hex HMAC-SHA-256 over METHOD, target, timestamp, nonce, body SHA-256"))
_REASONS = {400: "bad input (missing field, wrong type, bad value)", 401: "not logged in",
            403: "wrong role, CSRF token missing or wrong, or the initial password not changed yet",
            405: "method not allowed", 409: "conflict", 413: "body over the size limit",
            415: "body is not application/json"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def operation(route: ApiRoute) -> dict:
    op: dict = {"operationId": route.operation_id, "summary": route.summary, "responses": {}}
    ok = 201 if 201 in route.responses else 200
    op["responses"][str(ok)] = {"description": route.responses.get(ok, "ok"),
                                "content": _json(route.response_schema or {"type": "object"})}
    errors = {400, 405, 413} if route.body is not None else {405, 413}
    if route.body is not None:
        errors.add(415)
    if route.roles is not None:
        errors |= {401, 403}
        op["security"] = [{"session": []}]
        op["description"] = f"Roles: {', '.join(route.roles)}."
    if route.signed:
        errors |= {401, 403}
        op["security"] = [{"merchant_signature": []}]
        op["description"] = ("Signed by the merchant (telecom_pay/merchants/README.md): 401 with `code` "
                             "missing_signature, unknown_key, bad_signature, stale_timestamp or nonce_reused; "
                             "403 merchant_disabled.")
    params = list(route.parameters)
    if route.signed:
        params += [{"name": name, "in": "header", "required": True, "schema": {"type": "string"},
                    "description": text} for name, text in SIGNED_HEADERS]
    if route.csrf:
        params.append({"name": CSRF_HEADER, "in": "header", "required": True,
                       "schema": {"type": "string"}, "description": "the session's CSRF token"})
    if params:
        op["parameters"] = params
    for status, text in route.responses.items():
        if status >= 400:
            errors.add(status)
        elif status != ok:                 # another success (202: accepted, not finished)
            op["responses"][str(status)] = {"description": text,
                                            "content": _json(route.response_schema or {"type": "object"})}
    for status in sorted(errors):
        op["responses"][str(status)] = {"description": route.responses.get(status, _REASONS.get(status, "refused")),
                                        "content": _json(ERROR)}
    if "503" in op["responses"]:
        op["responses"]["503"]["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                                             "schema": {"type": "integer"}}}
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": _json(route.body.schema())}
    return op


def document(routes: tuple[ApiRoute, ...]) -> dict:
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "telecom-pay web API", "version": "1",
                 "description": "Log in with POST /api/v1/session; later calls carry the session cookie, and "
                                f"state-changing ones the {CSRF_HEADER} header."},
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}, "field": {"type": "string"},
                                                 "code": {"type": "string"},
                                                 "fields": {"type": "array", "items": {"type": "string"}},
                                                 "refundable": {"type": "integer"},
                                                 "captcha_required": {"type": "boolean"},
                                                 "password_change_required": {"type": "boolean"}}}},
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
                                "merchant_signature": {"type": "apiKey", "in": "header", "name": "X-TP-Signature",
                                                       "description": "with X-TP-Key, X-TP-Timestamp and "
                                                                      "X-TP-Nonce: see the SP payment API"}},
        },
    }
