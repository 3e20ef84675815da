"""The daemon with only its [web] section, on port 0, and a small HTTP
client over real sockets (treq) that keeps cookies the way a browser does
for one site, so tests can look at (and tamper with) every one of them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

import treq
from twisted.internet import reactor

from telecom_pay import config
from telecom_pay.aio import wait_deferred
from telecom_pay.daemon import Daemon
from telecom_pay.security import PasswordHasher
from telecom_pay.webusers import WebUsers

# argon2 at its lowest cost: the tests check the flow, not the work factor
FAST_HASHER = dict(time_cost=1, memory_cost=8, parallelism=1)


def web_settings(stack: dict, **extra) -> config.Settings:
    return config.load(None, {
        "database.url": stack["database_url"], "sessions.url": stack.get("sessions_url", "memory://"),
        "sessions.prefix": stack.get("prefix", "tp:"), "security.allow_development_keys": True,
        "web.endpoint": "tcp:0:interface=127.0.0.1", "ami.enabled": False, **extra})


async def start_web(settings) -> tuple[Daemon, str]:
    daemon = Daemon(settings, reactor, sections=("web",))
    daemon.startService()
    await wait_deferred(daemon.ready)
    web = daemon.components["web"]
    web.app.users.hasher = PasswordHasher(**FAST_HASHER)
    port = await web.wait_listening()
    return daemon, f"http://127.0.0.1:{port}"


async def stop_web(daemon: Daemon) -> None:
    await wait_deferred(daemon.stopService())


def users_of(daemon: Daemon) -> WebUsers:
    return daemon.components["web"].app.users


async def add_user(daemon: Daemon, username: str, role: str, *, password: str, must_change: bool = False,
                   **kw) -> None:
    await users_of(daemon).create(username, role, actor="test", actor_role="system", address=None,
                                  password=password, must_change_password=must_change, **kw)


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class Browser:
    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)      # every Set-Cookie seen, raw

    async def request(self, method: str, path: str, *, json_body=None, form: dict | None = None,
                      data: bytes | None = None, headers: dict | None = None) -> Response:
        hdrs = {k: [v] for k, v in (headers or {}).items()}
        if self.cookies:
            hdrs["Cookie"] = ["; ".join(f"{k}={v}" for k, v in self.cookies.items())]
        kwargs = {}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", ["application/json"])
        if form is not None:
            from urllib.parse import urlencode
            data = urlencode(form).encode()
            hdrs.setdefault("Content-Type", ["application/x-www-form-urlencoded"])
        if data is not None:
            kwargs["data"] = data
        resp = await wait_deferred(treq.request(method, self.base + path, headers=hdrs, allow_redirects=False,
                                                **kwargs))
        body = await wait_deferred(resp.content())
        raw = {k.decode().lower(): [v.decode() for v in vs] for k, vs in resp.headers.getAllRawHeaders()}
        for line in raw.get("set-cookie", []):
            self.set_cookies.append(line)
            jar = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Response(resp.code, raw, body)

    async def get(self, path: str, **kw) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw) -> Response:
        return await self.request("POST", path, **kw)

    async def api_login(self, username: str, password: str, **extra) -> Response:
        return await self.post("/api/v1/session", json_body={"username": username, "password": password, **extra})
