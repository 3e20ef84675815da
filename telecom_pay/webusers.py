"""The people who log into the web interface, their roles and passwords,
and login throttling.

Passwords are argon2id (telecom_pay.security.PasswordHasher, off the
reactor thread). A user an operator creates gets a one-time password and
must change it before anything else. Throttling counts failures per account
and per address in the session store (`incr` with a TTL, so every daemon
instance sharing Redis sees the same counts); the account's lock is also
kept on its row, so a restart (or a memory store) does not lift it. Every
change writes the audit log through the ledger's writer, in the same
transaction as the change: who, role, address, what, before and after.
"""
from __future__ import annotations

import re
from hashlib import sha256
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import sqlalchemy as sa

from telecom_pay.accounts import audit, find_agent, find_merchant
from telecom_pay.ledger.ledger import Ledger, utcnow
from telecom_pay.ledger.tables import Stamp, accounts
from telecom_pay.msisdn import mask
from telecom_pay.security import PasswordHasher, generate_password
from telecom_pay.sessions import SessionStore

metadata = sa.MetaData()
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

web_users = sa.Table(
    "web_users", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("role", sa.String(24), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("must_change_password", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),            # active | disabled
    sa.Column("msisdn", sa.String(20)),                             # subscribers: their number (E.164 digits)
    sa.Column("agent_code", sa.String(16)),                         # agents: their float account's code
    sa.Column("merchant_id", Id, sa.ForeignKey(accounts.c.id, name="fk_web_users_merchant")),   # merchant staff
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", Stamp),
    sa.Column("last_login_at", Stamp),
    sa.Column("password_changed_at", Stamp),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
)
sa.Index("uq_web_users_username", web_users.c.username, unique=True)

AGENT, AGENT_SUPERVISOR, OPS_ADMIN, SUBSCRIBER = "agent", "agent_supervisor", "ops_admin", "subscriber"
#: a merchant's own people (web_users.merchant_id): the admin approves refunds and manages staff,
#: staff request refunds, read-only sees orders and statements
MERCHANT_ADMIN, MERCHANT_STAFF, MERCHANT_READONLY = "merchant_admin", "merchant_staff", "merchant_readonly"
MERCHANT_ROLES = (MERCHANT_ADMIN, MERCHANT_STAFF, MERCHANT_READONLY)
ROLES = (AGENT, AGENT_SUPERVISOR, OPS_ADMIN, SUBSCRIBER, *MERCHANT_ROLES)
#: the roles an operator creates (subscribers open their own web login)
STAFF_ROLES = (AGENT, AGENT_SUPERVISOR, OPS_ADMIN)
ACTIVE, DISABLED = "active", "disabled"

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{2,31}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 128          # argon2 takes any length; a megabyte "password" is a CPU attack
NO_PASSWORD = "!"           # not an argon2 hash: verifies nothing


class UserError(ValueError):
    """A request the user store refuses; the message is safe to show."""


@dataclass(frozen=True)
class ThrottleSettings:
    window: float = 900.0          # seconds a failure counts
    captcha_after: int = 3         # failures (of the account or of the address) before a CAPTCHA is asked
    lock_after: int = 10           # failures of one account before it is locked
    lock_minutes: int = 15
    address_limit: int = 50        # failures from one address before it is refused for the window

    @classmethod
    def from_config(cls, cfg: dict) -> "ThrottleSettings":
        return cls(window=float(cfg.get("login_window", 900)), captcha_after=int(cfg.get("captcha_after", 3)),
                   lock_after=int(cfg.get("lock_after", 10)), lock_minutes=int(cfg.get("lock_minutes", 15)),
                   address_limit=int(cfg.get("address_limit", 50)))


@dataclass(frozen=True)
class WebUser:
    id: int
    username: str
    role: str
    must_change_password: bool
    status: str
    msisdn: str | None
    agent_code: str | None
    locked_until: datetime | None
    password_changed_at: datetime | None = None
    merchant_id: int | None = None          # merchant staff: the merchant account they work for

    @classmethod
    def of(cls, row) -> "WebUser":
        return cls(row.id, row.username, row.role, bool(row.must_change_password), row.status, row.msisdn,
                   row.agent_code, row.locked_until, row.password_changed_at, row.merchant_id)

    @property
    def password_stamp(self) -> str | None:
        """Which password a login session was opened with: a session opened
        with an earlier one is no longer valid."""
        return self.password_changed_at.isoformat() if self.password_changed_at else None

    def public(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role, "status": self.status,
                "must_change_password": self.must_change_password,
                "msisdn": mask(self.msisdn) if self.msisdn else None, "agent_code": self.agent_code}


@dataclass(frozen=True)
class LoginResult:
    outcome: str                       # ok | wrong | captcha_required | locked | throttled
    user: WebUser | None = None
    captcha_required: bool = False     # the next attempt must carry a solved CAPTCHA

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def check_password_length(password: Any, minimum: int = MIN_PASSWORD) -> str:
    if not isinstance(password, str):
        raise UserError("the password must be a string")
    if len(password) < minimum:
        raise UserError(f"the password must have at least {minimum} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must have at most {MAX_PASSWORD} characters")
    return password


def check_password_rules(password: Any, *, username: str) -> str:
    check_password_length(password)
    if username.lower() in password.lower():
        raise UserError("the password must not contain the username")
    if len(set(password)) < 4:
        raise UserError("the password is too simple")
    return password


def _address(address: str | None) -> str:
    return (address or "unknown")[:64]


class WebUsers:
    """The user store and the login check, on the ledger's connections."""

    def __init__(self, ledger: Ledger, sessions: SessionStore, hasher: PasswordHasher | None = None, *,
                 throttle: ThrottleSettings | None = None, clock: Callable[[], datetime] | None = None):
        self.ledger = ledger
        self.sessions = sessions
        self.hasher = hasher or PasswordHasher()
        self.throttle = throttle or ThrottleSettings()
        self.clock = clock or getattr(ledger, "clock", utcnow)
        self._dummy_hash: str | None = None
        #: where subscribers' passwords live (their account's credentials; set
        #: by channels.web.selfservice): None = subscribers cannot log in
        self.subscriber_passwords: Any = None

    # ------------------------------------------------------------ reads

    async def get(self, username: str) -> WebUser | None:
        row = await self._row(username)
        return None if row is None else WebUser.of(row)

    async def _row(self, username: str):
        q = sa.select(web_users).where(web_users.c.username == username)

        async def read(conn):
            return (await conn.execute(q)).first()
        return await self.ledger.read(read)

    async def list(self) -> list[WebUser]:
        q = sa.select(web_users).order_by(web_users.c.username)

        async def read(conn):
            return [WebUser.of(r) for r in await conn.execute(q)]
        return await self.ledger.read(read)

    # ------------------------------------------------------------ creation

    async def create(self, username: str, role: str, *, actor: str, actor_role: str, address: str | None,
                     agent_code: str | None = None, msisdn: str | None = None, password: str | None = None,
                     must_change_password: bool = True, merchant_code: str | None = None) -> tuple[WebUser, str]:
        """Returns the user and its initial password (generated unless
        given): shown once to whoever created it, never stored in clear."""
        if not isinstance(username, str) or not USERNAME_RE.match(username):
            raise UserError("the username must be 3-32 characters: lower-case letters, digits, '.', '_', '-'")
        if role not in ROLES:
            raise UserError(f"the role must be one of {', '.join(ROLES)}")
        if role == AGENT and not agent_code:
            raise UserError("an agent needs an agent code")
        if role == SUBSCRIBER and not msisdn:
            raise UserError("a subscriber needs a number")
        if role != SUBSCRIBER and self.subscriber_passwords is not None \
                and self.subscriber_passwords.number(username) is not None:
            # a typed number logs a subscriber in: a staff user by that name could never log in
            raise UserError("a staff username cannot be a mobile number (numbers are the subscribers' logins)")
        if agent_code is not None and role not in (AGENT, AGENT_SUPERVISOR):
            raise UserError("only agents and supervisors have an agent code")
        if (role in MERCHANT_ROLES) != (merchant_code is not None):
            raise UserError("merchant staff, and only they, need a merchant code")
        initial = password if password is not None else generate_password(12)
        if password is not None:
            check_password_rules(password, username=username)
        # a subscriber's password is on their account (channels/web/selfservice.py):
        # the row holds a marker no password verifies, and costs no argon2 run
        password_hash = NO_PASSWORD if role == SUBSCRIBER and password is None else await self.hasher.hash(initial)
        now = self.clock()
        row = dict(username=username, role=role, password_hash=password_hash,
                   must_change_password=must_change_password, status=ACTIVE, msisdn=msisdn,
                   agent_code=agent_code, failed_logins=0, created_by=actor[:64], created_at=now, updated_at=now)
        merchant_ids: list[int] = []

        async def write(conn):
            if agent_code is not None and await find_agent(conn, agent_code) is None:
                raise UserError(f"no agent has the code {agent_code}")
            if merchant_code is not None:
                m = await find_merchant(conn, merchant_code.upper())
                if m is None:
                    raise UserError(f"no merchant has the code {merchant_code}")
                row["merchant_id"] = m.id
                merchant_ids.append(m.id)
            exists = (await conn.execute(sa.select(web_users.c.id).where(web_users.c.username == username))).first()
            if exists:
                raise UserError(f"the username {username} is taken")
            user_id = (await conn.execute(web_users.insert().returning(web_users.c.id), row)).scalar_one()
            await audit(conn, actor=actor[:64], channel="web", action="web_user_created", account_id=None,
                        role=actor_role, address=_address(address), user=username, before=None,
                        after={"username": username, "role": role, "agent_code": agent_code,
                               **({"merchant_code": merchant_code.upper()} if merchant_code else {}),
                               "msisdn": mask(msisdn) if msisdn else None, "status": ACTIVE,
                               "must_change_password": must_change_password})
            return user_id
        user_id = await self.ledger.write(write)
        return WebUser(user_id, username, role, must_change_password, ACTIVE, msisdn, agent_code, None,
                       merchant_id=merchant_ids[0] if merchant_ids else None), initial

    async def seed(self, entries: list[dict]) -> list[str]:
        """Development users from config (`[[web.dev_users]]`), created once
        and without the first-login change, so `make run` can be tried at
        once. The caller decides whether seeding is allowed at all."""
        created = []
        for entry in entries:
            username = str(entry["username"])
            if await self.get(username) is not None:
                continue
            await self.create(username, str(entry["role"]), actor="config", actor_role="system", address=None,
                              agent_code=entry.get("agent_code"), msisdn=entry.get("msisdn"),
                              password=str(entry["password"]), must_change_password=False,
                              merchant_code=entry.get("merchant_code"))
            created.append(username)
        return created

    # ------------------------------------------------------------ merchant staff

    async def merchant_staff(self, merchant_id: int) -> list[WebUser]:
        q = sa.select(web_users).where(web_users.c.merchant_id == merchant_id).order_by(web_users.c.username)

        async def read(conn):
            return [WebUser.of(r) for r in await conn.execute(q)]
        return await self.ledger.read(read)

    async def change_merchant_user(self, username: str, *, merchant_id: int, actor: str, actor_role: str,
                                   address: str | None, status: str | None = None,
                                   role: str | None = None) -> WebUser:
        """A merchant admin disables, enables or changes the role of one of
        its own merchant's users (never its own row: a merchant must not lock
        out its last admin by a slip). Another merchant's user is "no such
        user", as if it did not exist. A disabled user's sessions end at
        their next request (WebApp.context reads the row)."""
        if status is not None and status not in (ACTIVE, DISABLED):
            raise UserError("the status must be active or disabled")
        if role is not None and role not in MERCHANT_ROLES:
            raise UserError(f"the role must be one of {', '.join(MERCHANT_ROLES)}")
        if username == actor:
            raise UserError("you cannot change your own status or role")
        now = self.clock()

        async def write(conn):
            row = (await conn.execute(sa.select(web_users).where(
                web_users.c.username == username, web_users.c.merchant_id == merchant_id))).first()
            if row is None or row.role not in MERCHANT_ROLES:
                raise UserError("no such user")
            values = {}
            if status is not None and status != row.status:
                values["status"] = status
            if role is not None and role != row.role:
                values["role"] = role
            if values:
                await conn.execute(web_users.update().where(web_users.c.id == row.id).values(updated_at=now,
                                                                                              **values))
                await audit(conn, actor=actor[:64], channel="web", action="web_user_changed", account_id=merchant_id,
                            role=actor_role, address=_address(address), user=username,
                            before={k: getattr(row, k) for k in values}, after=values)
            return (await conn.execute(sa.select(web_users).where(web_users.c.id == row.id))).first()
        return WebUser.of(await self.ledger.write(write))

    # ------------------------------------------------------------ login

    def _keys(self, username: str, address: str | None) -> tuple[str, str]:
        # what was typed as a username is hashed: people type passwords there too
        typed = sha256(username.lower().encode("utf-8", "replace")).hexdigest()[:32]
        return f"web:loginfail:user:{typed}", f"web:loginfail:addr:{_address(address)}"

    async def failures(self, username: str, address: str | None) -> tuple[int, int]:
        """(failures of the account, failures of the address) within the window."""
        user_key, addr_key = self._keys(username, address)
        window = self.throttle.window
        return (await self.sessions.incr(user_key, window, 0), await self.sessions.incr(addr_key, window, 0))

    async def forget_failures(self, username: str) -> None:
        """The account's failure count starts again (a password reset proved the owner)."""
        await self.sessions.delete(self._keys(username, None)[0])

    async def captcha_required(self, username: str, address: str | None) -> bool:
        return max(await self.failures(username, address)) >= self.throttle.captcha_after

    async def authenticate(self, username: str, password: str, *, address: str | None,
                           captcha_solved: bool = False) -> LoginResult:
        t = self.throttle
        if self.subscriber_passwords is not None:
            # a number in any typed form is one subscriber's login (and one throttle count)
            username = await self.subscriber_passwords.login_name(username)
        user_failures, addr_failures = await self.failures(username, address)
        if addr_failures >= t.address_limit:
            return LoginResult("throttled", captcha_required=True)
        if max(user_failures, addr_failures) >= t.captcha_after and not captcha_solved:
            return LoginResult("captcha_required", captcha_required=True)
        row = await self._row(username)
        now = self.clock()
        if row is not None and row.locked_until is not None and row.locked_until > now:
            return LoginResult("locked", captcha_required=True)
        if row is not None and row.role in MERCHANT_ROLES and not captcha_solved:
            # merchant staff log in with a CAPTCHA every time (/merchant/login), on every entry point
            return LoginResult("captcha_required", captcha_required=True)
        if row is None:
            # the same argon2 work as for a real account: the answer's timing does not say which names exist
            await self.hasher.verify(await self._dummy(), password)
            ok = False
        else:
            ok = await self._verify(row, password) and row.status == ACTIVE
        if ok:
            await self.sessions.delete(self._keys(username, address)[0])
            user = WebUser.of(row)
            await self._record_login(row, address, now)
            return LoginResult("ok", user)
        user_key, addr_key = self._keys(username, address)
        user_failures = await self.sessions.incr(user_key, t.window)
        addr_failures = await self.sessions.incr(addr_key, t.window)
        await self._record_failure(username, row, address, now, locks=user_failures >= t.lock_after)
        return LoginResult("wrong", captcha_required=max(user_failures, addr_failures) >= t.captcha_after)

    async def _verify(self, row, password: str) -> bool:
        if row.role == SUBSCRIBER:
            return self.subscriber_passwords is not None and await self.subscriber_passwords.verify(row, password)
        return await self.hasher.verify(row.password_hash, password)

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hasher.hash(generate_password(16))
        return self._dummy_hash

    async def _record_login(self, row, address, now) -> None:
        async def write(conn):
            await conn.execute(web_users.update().where(web_users.c.id == row.id).values(
                failed_logins=0, locked_until=None, last_login_at=now, updated_at=now))
            await audit(conn, actor=row.username, channel="web", action="web_login", account_id=None,
                        role=row.role, address=_address(address),
                        before={"failed_logins": row.failed_logins}, after={"failed_logins": 0})
        await self.ledger.write(write)

    async def _record_failure(self, username: str, row, address, now, *, locks: bool) -> None:
        lock_until = now + timedelta(minutes=self.throttle.lock_minutes)

        async def write(conn):
            if row is None:
                # not the name typed: people type passwords into the username field
                await audit(conn, actor="(unknown user)", channel="web", action="web_login_failed", account_id=None,
                            role=None, address=_address(address), known_user=False, before=None, after=None)
                return
            failures = row.failed_logins + 1
            values = {"failed_logins": failures, "updated_at": now}
            if locks:
                values["locked_until"] = lock_until
            await conn.execute(web_users.update().where(web_users.c.id == row.id).values(**values))
            await audit(conn, actor=row.username, channel="web", action="web_login_failed", account_id=None,
                        role=row.role, address=_address(address), known_user=True,
                        before={"failed_logins": row.failed_logins}, after={"failed_logins": failures})
            if locks:
                await audit(conn, actor=row.username, channel="web", action="web_login_locked", account_id=None,
                            role=row.role, address=_address(address),
                            before={"locked_until": row.locked_until.isoformat() if row.locked_until else None},
                            after={"locked_until": lock_until.isoformat()})
        await self.ledger.write(write)

    # ------------------------------------------------------------ password change

    async def change_password(self, username: str, current: str, new: str, *, address: str | None) -> WebUser:
        row = await self._row(username)
        if row is None or row.status != ACTIVE:
            raise UserError("no such user")
        if row.role == SUBSCRIBER and self.subscriber_passwords is not None:
            self.subscriber_passwords.check_rules(new, msisdn=row.msisdn)
        else:
            check_password_rules(new, username=username)
        if not await self._verify(row, current):
            raise UserError("the current password is wrong")
        if current == new:
            raise UserError("the new password must differ from the current one")
        new_hash = await self.hasher.hash(new)
        now = self.clock()

        async def write(conn):
            values = dict(must_change_password=False, password_changed_at=now, updated_at=now)
            if row.role == SUBSCRIBER:
                await self.subscriber_passwords.store(conn, row.msisdn, new_hash)
            else:
                values["password_hash"] = new_hash
            await conn.execute(web_users.update().where(web_users.c.id == row.id).values(**values))
            await audit(conn, actor=row.username, channel="web", action="web_password_changed", account_id=None,
                        role=row.role, address=_address(address),
                        before={"must_change_password": bool(row.must_change_password),
                                "password_changed_at": row.password_changed_at.isoformat()
                                if row.password_changed_at else None},
                        after={"must_change_password": False, "password_changed_at": now.isoformat()})
        await self.ledger.write(write)
        return WebUser(row.id, row.username, row.role, False, row.status, row.msisdn, row.agent_code,
                       row.locked_until, now)

    async def record_logout(self, user: dict, *, address: str | None) -> None:
        async def write(conn):
            await audit(conn, actor=user["username"], channel="web", action="web_logout", account_id=None,
                        role=user["role"], address=_address(address), before={"session": "open"},
                        after={"session": "closed"})
        await self.ledger.write(write)
