"""The sample shop's state: orders, refunds, the callbacks received and the
callbacks' nonces, in one SQLite file (var/merchant-shop/shop.sqlite3).

Synchronous on purpose: every call is one short transaction that the shop
runs off the reactor thread (deferToThread), under one lock, so a callback
that arrives twice at once is applied once (its event id is looked up and
recorded in the transaction that applies it) and the shop answers the
platform only after the change is on disk.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    item TEXT NOT NULL,
    description TEXT NOT NULL,
    amount INTEGER NOT NULL,
    msisdn TEXT NOT NULL,
    status TEXT NOT NULL,             -- new (no answer yet), refused, pending, confirmed, declined, expired
    payment_id TEXT,
    payment TEXT,                     -- the platform's payment object (JSON), latest known
    error TEXT,                       -- the platform's last refusal or why it could not be reached
    revision INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    refund_id TEXT PRIMARY KEY,       -- the shop's idempotency key
    order_id TEXT NOT NULL REFERENCES orders(order_id),
    amount INTEGER,                   -- NULL: "what is left", until the platform says how much
    reason TEXT NOT NULL,
    status TEXT NOT NULL,             -- requested (no answer yet), refused, pending_review, succeeded, rejected
    refund TEXT,                      -- the platform's refund object (JSON), latest known
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS callbacks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    event_id TEXT,
    type TEXT,
    order_id TEXT,
    verified INTEGER NOT NULL,        -- 1: the signature checked
    refusal TEXT,                     -- the signing error code when it did not
    outcome TEXT NOT NULL,            -- applied, duplicate, refused, ignored: ...
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applied_events (event_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (
    key_id TEXT NOT NULL, nonce TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (key_id, nonce));
"""

FINAL_PAYMENT = frozenset({"confirmed", "declined", "expired"})
FINAL_REFUND = frozenset({"succeeded", "rejected"})
PAYMENT_EVENTS = {"payment.confirmed": "confirmed", "payment.declined": "declined", "payment.expired": "expired"}
REFUND_EVENTS = {"refund.succeeded": "succeeded", "refund.rejected": "rejected"}
BODY_KEPT = 4000                      # characters of a callback's body kept for the listing


@dataclass(frozen=True)
class Outcome:
    """What became of a callback: `applied` (the order changed), `duplicate`
    (its event id was applied before), or `ignored: why`."""
    outcome: str
    order_id: str | None

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


class ShopStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('tag', ?)", (secrets.token_hex(2),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")
                return store._db

            def __exit__(self, kind, value, tb):
                try:
                    store._db.execute("COMMIT" if kind is None else "ROLLBACK")
                finally:
                    store._lock.release()
        return _Tx()

    # ------------------------------------------------------------ orders

    def new_order(self, item: str, description: str, amount: int, msisdn: str, day: str) -> str:
        """A new order with the next id of the day: S<day>-<n>-<tag>. The tag
        is this database's, so a shop whose file was deleted never reuses an
        order id the platform already holds (it would answer 409)."""
        now = time.time()
        with self._tx() as db:
            tag = db.execute("SELECT value FROM meta WHERE name='tag'").fetchone()[0]
            key = f"counter:{day}"
            row = db.execute("SELECT value FROM meta WHERE name=?", (key,)).fetchone()
            n = int(row[0]) + 1 if row else 1
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(n)))
            order_id = f"S{day}-{n:04d}-{tag}"
            db.execute("INSERT INTO orders (order_id, item, description, amount, msisdn, status, created_at, "
                       "updated_at) VALUES (?, ?, ?, ?, ?, 'new', ?, ?)",
                       (order_id, item, description, amount, msisdn, now, now))
        return order_id

    def order(self, order_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM orders WHERE order_id=?", (order_id,)).fetchone()
            if row is None:
                return None
            order = _order(row)
            order["refunds"] = [_refund(r) for r in self._db.execute(
                "SELECT * FROM refunds WHERE order_id=? ORDER BY created_at, refund_id", (order_id,))]
            order["callbacks"] = [_callback(r) for r in self._db.execute(
                "SELECT * FROM callbacks WHERE order_id=? ORDER BY seq", (order_id,))]
        order["refunded"] = sum(r["amount"] or 0 for r in order["refunds"] if r["status"] == "succeeded")
        order["refund_pending"] = sum(r["amount"] or 0 for r in order["refunds"]
                                      if r["status"] in ("requested", "pending_review"))
        return order

    def orders(self, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            return [_order(r) for r in self._db.execute(
                "SELECT * FROM orders ORDER BY created_at DESC, order_id DESC LIMIT ?", (limit,))]

    def callbacks(self, limit: int = 200) -> list[dict[str, Any]]:
        with self._lock:
            return [_callback(r) for r in self._db.execute(
                "SELECT * FROM callbacks ORDER BY seq DESC LIMIT ?", (limit,))]

    def payment_answer(self, order_id: str, payment: dict | None, error: str | None, *, definite: bool) -> None:
        """The platform's answer to the order's creation or a status check:
        its payment object, or a refusal (`definite`: the platform said no,
        the order is `refused`), or no answer at all (the order keeps its state)."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM orders WHERE order_id=?", (order_id,)).fetchone()
            if row is None:
                return
            if payment is not None and _stale(row["status"], str(payment.get("status", "")), FINAL_PAYMENT):
                db.execute("UPDATE orders SET payment_id=COALESCE(payment_id, ?), error=NULL, revision=revision+1, "
                           "updated_at=? WHERE order_id=?", (payment.get("id"), time.time(), order_id))
            elif payment is not None:
                status = _payment_status(row["status"], str(payment.get("status", "")))
                db.execute("UPDATE orders SET status=?, payment_id=?, payment=?, error=NULL, revision=revision+1, "
                           "updated_at=? WHERE order_id=?",
                           (status, payment.get("id"), json.dumps(payment), time.time(), order_id))
            else:
                status = "refused" if definite and row["status"] == "new" else row["status"]
                db.execute("UPDATE orders SET status=?, error=?, revision=revision+1, updated_at=? WHERE order_id=?",
                           (status, error, time.time(), order_id))

    # ------------------------------------------------------------ refunds

    def new_refund(self, order_id: str, amount: int | None, reason: str) -> str:
        now = time.time()
        with self._tx() as db:
            n = db.execute("SELECT COUNT(*) FROM refunds WHERE order_id=?", (order_id,)).fetchone()[0] + 1
            refund_id = f"{order_id}-R{n}"
            db.execute("INSERT INTO refunds (refund_id, order_id, amount, reason, status, created_at, updated_at) "
                       "VALUES (?, ?, ?, ?, 'requested', ?, ?)", (refund_id, order_id, amount, reason, now, now))
            _touch(db, order_id)
        return refund_id

    def refund(self, refund_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM refunds WHERE refund_id=?", (refund_id,)).fetchone()
        return None if row is None else _refund(row)

    def refund_answer(self, refund_id: str, refund: dict | None, error: str | None, *, definite: bool) -> None:
        with self._tx() as db:
            row = db.execute("SELECT order_id, status FROM refunds WHERE refund_id=?", (refund_id,)).fetchone()
            if row is None:
                return
            if refund is not None:
                _apply_refund(db, refund_id, row["status"], refund)
            else:
                status = "refused" if definite and row["status"] == "requested" else row["status"]
                db.execute("UPDATE refunds SET status=?, error=?, updated_at=? WHERE refund_id=?",
                           (status, error, time.time(), refund_id))
            _touch(db, row["order_id"])

    # ------------------------------------------------------------ callbacks

    def refused_callback(self, code: str, body: bytes, event_id: str | None) -> None:
        """A callback whose signature did not check: listed, nothing else."""
        with self._tx() as db:
            db.execute("INSERT INTO callbacks (received_at, event_id, verified, refusal, outcome, body) "
                       "VALUES (?, ?, 0, ?, 'refused', ?)", (time.time(), event_id, code, _text(body)))

    def apply_callback(self, event: dict[str, Any], body: bytes) -> Outcome:
        """A signed callback: recorded, and applied unless its event id was."""
        event_id = str(event.get("event_id") or "")
        kind = str(event.get("type") or "")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        with self._tx() as db:
            order_id = self._order_of(db, kind, data)
            if not event_id:
                outcome = "ignored: no event_id"
            elif db.execute("SELECT 1 FROM applied_events WHERE event_id=?", (event_id,)).fetchone():
                outcome = "duplicate"
            elif order_id is None:
                outcome = "ignored: no such order or refund here"
            elif kind in PAYMENT_EVENTS:
                outcome = self._apply_payment_event(db, order_id, data)
            elif kind in REFUND_EVENTS:
                outcome = self._apply_refund_event(db, order_id, data)
            else:
                outcome = f"ignored: unknown type {kind!r}"
            cur = db.execute("INSERT INTO callbacks (received_at, event_id, type, order_id, verified, outcome, body) "
                             "VALUES (?, ?, ?, ?, 1, ?, ?)",
                             (time.time(), event_id or None, kind or None, order_id, outcome, _text(body)))
            if outcome == "applied":
                db.execute("INSERT INTO applied_events VALUES (?, ?)", (event_id, cur.lastrowid))
            if order_id is not None:
                _touch(db, order_id)
        return Outcome(outcome, order_id)

    @staticmethod
    def _order_of(db, kind: str, data: dict) -> str | None:
        if kind in REFUND_EVENTS:
            row = db.execute("SELECT order_id FROM refunds WHERE refund_id=?", (str(data.get("refund_id")),)).fetchone()
            if row is None and data.get("payment_id"):
                row = db.execute("SELECT order_id FROM orders WHERE payment_id=?", (str(data["payment_id"]),)).fetchone()
        else:
            row = db.execute("SELECT order_id FROM orders WHERE order_id=?", (str(data.get("order_id")),)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _apply_payment_event(db, order_id: str, payment: dict) -> str:
        row = db.execute("SELECT status, payment_id FROM orders WHERE order_id=?", (order_id,)).fetchone()
        if row["payment_id"] and payment.get("id") != row["payment_id"]:
            return "ignored: another payment id than this order's"
        status = _payment_status(row["status"], str(payment.get("status", "")))
        db.execute("UPDATE orders SET status=?, payment_id=?, payment=?, error=NULL, updated_at=? WHERE order_id=?",
                   (status, payment.get("id"), json.dumps(payment), time.time(), order_id))
        return "applied"

    @staticmethod
    def _apply_refund_event(db, order_id: str, refund: dict) -> str:
        refund_id = str(refund.get("refund_id"))
        row = db.execute("SELECT status FROM refunds WHERE refund_id=?", (refund_id,)).fetchone()
        if row is None:
            return "ignored: a refund this shop did not ask for"
        _apply_refund(db, refund_id, row["status"], refund)
        return "applied"

    # ------------------------------------------------------------ nonces

    def remember_nonce(self, key_id: str, nonce: str, ttl: float) -> bool:
        """True if the nonce is new (then kept for `ttl` seconds)."""
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
            cur = db.execute("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)", (key_id, nonce, now + ttl))
            return cur.rowcount == 1


def _stale(current: str, reported: str, final: frozenset) -> bool:
    """An answer older than what a callback already said: the answer to the
    creation can arrive after the callback of its outcome."""
    return current in final and reported not in final


def _payment_status(current: str, reported: str) -> str:
    """A final state is never undone by a late answer saying `pending`."""
    if current in FINAL_PAYMENT and reported not in FINAL_PAYMENT:
        return current
    return reported if reported in FINAL_PAYMENT | {"pending"} else current


def _apply_refund(db, refund_id: str, current: str, refund: dict) -> None:
    reported = str(refund.get("status", ""))
    if _stale(current, reported, FINAL_REFUND):
        return
    status = reported
    amount = refund.get("amount")
    db.execute("UPDATE refunds SET status=?, refund=?, amount=COALESCE(?, amount), error=NULL, updated_at=? "
               "WHERE refund_id=?",
               (status or current, json.dumps(refund), amount if isinstance(amount, int) else None, time.time(),
                refund_id))


def _touch(db, order_id: str) -> None:
    """The order page polls the revision: anything shown on it bumps it."""
    db.execute("UPDATE orders SET revision=revision+1, updated_at=? WHERE order_id=?", (time.time(), order_id))


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")[:BODY_KEPT]


def _order(row) -> dict[str, Any]:
    order = dict(row)
    order["payment"] = json.loads(order["payment"]) if order["payment"] else None
    return order


def _refund(row) -> dict[str, Any]:
    refund = dict(row)
    refund["refund"] = json.loads(refund["refund"]) if refund["refund"] else None
    return refund


def _callback(row) -> dict[str, Any]:
    return dict(row)
