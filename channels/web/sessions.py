"""Web login sessions in the session store, and their CSRF tokens.

The cookie carries a random token; the store keeps the session under its
SHA-256, so a dump of Redis yields no usable cookie. Every request that
finds the session puts it back with the full idle timeout: the TTL is the
idle timeout, and an idle session simply expires (on every instance
sharing the store). The CSRF token is per session, sent back with every
state-changing form and API call, and compared in constant time.
"""
from __future__ import annotations

import hmac
import secrets
from hashlib import sha256

from telecom_pay.sessions import SessionStore
from telecom_pay.webusers import WebUser

COOKIE = "tp_session"
LOGIN_COOKIE = "tp_login"          # the login form's own CSRF token, before there is a session
CSRF_HEADER = "X-CSRF-Token"


def _key(token: str) -> str:
    return "web:session:" + sha256(token.encode()).hexdigest()


def same_token(expected: str | None, given: str | None) -> bool:
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


class WebSessions:
    def __init__(self, store: SessionStore, *, idle_timeout: float):
        self.store = store
        self.idle_timeout = idle_timeout

    async def create(self, user: WebUser) -> tuple[str, dict]:
        token = secrets.token_urlsafe(32)
        value = {"username": user.username, "role": user.role, "user_id": user.id,
                 "must_change_password": user.must_change_password, "password": user.password_stamp,
                 "merchant_id": user.merchant_id,
                 "csrf": secrets.token_urlsafe(32)}
        await self.store.put(_key(token), value, self.idle_timeout)
        return token, value

    async def get(self, token: str | None) -> dict | None:
        """The session, its idle timeout restarted; None when absent or idle too long."""
        if not token or len(token) > 100:
            return None
        value = await self.store.get(_key(token))
        if value is not None:
            await self.store.put(_key(token), value, self.idle_timeout)
        return value

    async def update(self, token: str, value: dict) -> None:
        await self.store.put(_key(token), value, self.idle_timeout)

    async def delete(self, token: str) -> None:
        await self.store.delete(_key(token))
