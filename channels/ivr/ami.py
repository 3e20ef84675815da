"""The AMI client: call-backs originated on the switch, and the switch's
call events recorded for the statistics.

asterisk-ami (`asterisk.ami`) is blocking and threaded: its reader thread
runs the callbacks and event listeners, `FutureResponse.response` blocks,
and `AutoReconnect` pings and logs in again from a thread of its own. So
the library lives on threads of its own (`AmiLink`): every call into it
runs on one worker thread, whatever it reports reaches the reactor by
`reactor.callFromThread`, and the reactor thread never waits on a socket.

Traps of the library this module works around (see its source):
- an exception inside a response callback or an event listener reaches
  `FutureResponse.set_response`'s `traceback.print_exc()` without
  `traceback` imported, and the NameError ends the reader thread: every
  callback given to it here catches everything;
- AutoReconnect starts only after a first successful login, so the first
  login is retried here, with back-off, until it succeeds;
- when its reader thread dies (a socket timeout, a server gone) the client
  is not marked finished, so a re-login would write on the dead socket
  forever: the disconnect listener marks it finished, and AutoReconnect's
  next login opens a new connection;
- the ActionID counter is not thread-safe: our actions carry their own.

Nothing is originated before the switch says `FullyBooted` on the current
login (Asterisk drops an Originate it gets while starting).

Call-backs (telecom_pay.callbacks) are rows: the poller (woken when a
request commits, and every `callback_poll` seconds) claims a due row,
sends an async Originate under an ActionID stored in the row, and the
OriginateResponse event for that ActionID says answered or failed. A
refused Originate is a failed attempt (retried, then failed); one that
never left the process is released without counting; one with no outcome
at all is taken up after `callback_dial_timeout` from the table, by this
process or the next.
"""
from __future__ import annotations

import queue
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.logger import Logger

from telecom_pay.aio import as_deferred, wait_deferred
from telecom_pay.callbacks import FAILED
from telecom_pay.calls import CallLog
from telecom_pay.core import Core
from telecom_pay.msisdn import MsisdnError, local_form, mask, normalize
from telecom_pay.outcomes import Outcome, Result

log = Logger(namespace="telecom_pay.ami")

ACTION_PREFIX = "tp-cb-"
LOGIN_BACKOFF_MAX = 30.0
MAX_OPEN_CHANNELS = 100_000      # channels seen starting, kept for their hang-up's duration


@dataclass(frozen=True)
class AmiConfig:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "telecom-pay"
    secret: str = ""
    timeout: float = 3.0                 # socket and response wait of the library
    ping_interval: float = 1.0           # AutoReconnect's ping (keep it below timeout)
    login_retry: float = 1.0             # first wait before the first login is tried again
    channel: str = "PJSIP/{msisdn}@trunk"
    context: str = "telecom-pay-callback"
    exten: str = "s"
    priority: int = 1
    caller_id: str = ""
    ring_timeout: float = 30.0
    poll: float = 2.0

    @classmethod
    def from_config(cls, cfg: dict, service_number: str) -> "AmiConfig":
        return cls(host=str(cfg.get("host", cls.host)), port=int(cfg.get("port", cls.port)),
                   username=str(cfg.get("username", cls.username)), secret=str(cfg.get("secret", "")),
                   timeout=float(cfg.get("timeout", cls.timeout)),
                   ping_interval=float(cfg.get("ping_interval", cls.ping_interval)),
                   login_retry=float(cfg.get("login_retry", cls.login_retry)),
                   channel=str(cfg.get("callback_channel", cls.channel)),
                   context=str(cfg.get("callback_context", cls.context)),
                   exten=str(cfg.get("callback_exten", cls.exten)),
                   priority=int(cfg.get("callback_priority", cls.priority)),
                   caller_id=str(cfg.get("callback_caller_id", service_number)),
                   ring_timeout=float(cfg.get("callback_ring_timeout", cls.ring_timeout)),
                   poll=float(cfg.get("callback_poll", cls.poll)))


class AmiLink:
    """asterisk-ami on its own threads. `on_event(name, keys)` and
    `on_link(up, why)` are called on the reactor thread."""

    def __init__(self, reactor, cfg: AmiConfig, *, on_event: Callable[[str, dict], None],
                 on_link: Callable[[bool, str], None]):
        self.reactor = reactor
        self.cfg = cfg
        self.on_event = on_event
        self.on_link = on_link
        self._jobs: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._done: defer.Deferred | None = None

    # -- reactor side

    def start(self) -> None:
        self._done = defer.Deferred()
        self._thread = threading.Thread(target=self._run, name="ami-link", daemon=True)
        self._thread.start()

    def stop(self) -> defer.Deferred:
        """Log off and let the threads end; fires when the worker is done
        (at most about one library timeout later)."""
        self._stopping.set()
        self._jobs.put(None)
        return self._done if self._done is not None else defer.succeed(None)

    def submit(self, fn: Callable[[Any], Any]) -> defer.Deferred:
        """Run `fn(client)` on the worker thread; its result (or exception)
        comes back as a Deferred on the reactor thread."""
        d = defer.Deferred()
        if self._stopping.is_set():
            d.errback(Failure(ConnectionError("the AMI link is stopping")))
        else:
            self._jobs.put((fn, d))
        return d

    def originate(self, action_id: str, fields: dict[str, Any], variables: dict[str, str]) -> defer.Deferred:
        """Send one Originate; fires with its immediate response as
        `(status, keys)`, or None when none came within the timeout."""
        from asterisk.ami import SimpleAction

        def send(client):
            if client is None:
                raise ConnectionError("not logged in to the AMI")
            action = SimpleAction("Originate", ActionID=action_id, **fields)
            for k, v in variables.items():
                action[k] = v
            response = client.send_action(action).response      # blocks this thread only
            return None if response is None else (response.status, dict(response.keys))
        return self.submit(send)

    # -- worker thread

    def _run(self) -> None:
        try:
            self._login_until_done()
            while True:
                item = self._jobs.get()
                if item is None:
                    break
                fn, d = item
                try:
                    result = fn(self._client)
                except BaseException:
                    self.reactor.callFromThread(d.errback, Failure())
                else:
                    self.reactor.callFromThread(d.callback, result)
        finally:
            self._shutdown_client()
            self._fail_waiting()
            self.reactor.callFromThread(self._done.callback, None)

    def _fail_waiting(self) -> None:
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.reactor.callFromThread(item[1].errback, Failure(ConnectionError("the AMI link stopped")))

    def _login_until_done(self) -> None:
        delay, told = self.cfg.login_retry, False
        while not self._stopping.is_set():
            why = self._login_once()
            if why is None:
                return
            if not told:
                self.reactor.callFromThread(self.on_link, False, why)
                told = True
            self._stopping.wait(delay)
            delay = min(delay * 2, LOGIN_BACKOFF_MAX)

    def _login_once(self) -> str | None:
        """One first login on a fresh client; None when logged in, else why not."""
        from asterisk.ami import AMIClient, AutoReconnect
        cfg = self.cfg
        client = AMIClient(address=cfg.host, port=cfg.port, timeout=cfg.timeout)
        client.add_listener(on_disconnect=self._reader_ended)
        client.add_event_listener(self._event_from_reader)
        AutoReconnect(client, delay=cfg.ping_interval, on_disconnect=self._ping_failed,
                      on_reconnect=self._logged_in_again)
        try:
            response = client.login(username=cfg.username, secret=cfg.secret, callback=self._login_answered).response
        except Exception as exc:          # refused, reset, timed out
            self._discard(client)
            return f"{type(exc).__name__}: {exc}"
        if response is None or response.is_error():
            self._discard(client)
            return "no answer to Login" if response is None else f"Login refused: {response.keys.get('Message')}"
        self._client = client
        return None

    @staticmethod
    def _discard(client) -> None:
        try:
            if client.finished is not None:
                client.disconnect()
        except Exception:
            pass

    def _shutdown_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logoff()          # AutoReconnect's wrapper: its thread ends too
        except Exception:
            pass
        self._discard(client)

    # -- library threads (reader, AutoReconnect): never raise, only hand over

    def _login_answered(self, response, *a, **k) -> None:
        try:
            if response is not None and not response.is_error():
                self.reactor.callFromThread(self.on_link, True, "logged in")
        except Exception:
            pass

    def _logged_in_again(self, client, response) -> None:
        try:
            log.info("AMI: logged in again to {host}:{port}", host=self.cfg.host, port=self.cfg.port)
        except Exception:
            pass

    def _ping_failed(self, client, why) -> None:
        try:
            if not self._stopping.is_set():
                self.reactor.callFromThread(self.on_link, False, "ping failed")
        except Exception:
            pass

    def _reader_ended(self, source, error=None, **_) -> None:
        try:
            if source.finished is not None:
                source.finished.set()
            source._socket.close()
        except Exception:
            pass
        try:
            if source is self._client and not self._stopping.is_set():
                self.reactor.callFromThread(self.on_link, False, "connection lost")
        except Exception:
            pass

    def _event_from_reader(self, event, source=None, **_) -> None:
        try:
            self.reactor.callFromThread(self.on_event, str(event.name), dict(event.keys))
        except Exception:
            pass


class AmiService(Service):
    """The AMI component of the daemon: keeps the link, records call
    events, dials call-backs."""

    name = "ami"

    def __init__(self, core: Core, cfg: AmiConfig, reactor):
        self.core = core
        self.cfg = cfg
        self.reactor = reactor
        self.calls = CallLog(core.ledger)
        self.callbacks = core.service.callbacks
        self.link = AmiLink(reactor, cfg, on_event=self._on_event, on_link=self._on_link)
        self.connected = False
        self.booted = False         # the switch said FullyBooted on this login: it takes Originates
        self.stats = {"logins": 0, "link_lost": 0, "events": 0, "originated": 0, "answered": 0,
                      "attempts_failed": 0}
        self._channel_start: dict[str, float] = {}
        self._loop: task.LoopingCall | None = None
        self._dialling = False
        self._again = False
        self._pending: set[defer.Deferred] = set()

    # -- life

    def startService(self):
        super().startService()
        self.callbacks.wakers.append(self.wake)
        self.link.start()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.cfg.poll, now=False)

    def stopService(self):
        super().stopService()
        if self.wake in self.callbacks.wakers:
            self.callbacks.wakers.remove(self.wake)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        d = self.link.stop()

        def drain(_):
            return defer.DeferredList(list(self._pending), consumeErrors=True)
        return d.addBoth(drain)

    def wake(self) -> None:
        """A request committed: dial now, not at the next poll."""
        if self.running:
            self.reactor.callLater(0, self._tick)

    def _track(self, d: defer.Deferred, what: str) -> None:
        self._pending.add(d)

        def done(result):
            self._pending.discard(d)
            if isinstance(result, Failure):
                log.failure("AMI: {what} failed", result, what=what)
        d.addBoth(done)

    # -- link and events (reactor thread)

    def _on_link(self, up: bool, why: str) -> None:
        if up and not self.connected:
            self.stats["logins"] += 1
            log.info("AMI: logged in to {host}:{port}", host=self.cfg.host, port=self.cfg.port)
            self.connected = True
            self._tick()
        elif not up and self.connected:
            self.booted = False
            self.stats["link_lost"] += 1
            log.warn("AMI: link to {host}:{port} lost ({why}); reconnecting", host=self.cfg.host,
                     port=self.cfg.port, why=why)
            self.connected = False
        elif not up:
            log.warn("AMI: cannot log in to {host}:{port} ({why}); retrying", host=self.cfg.host, port=self.cfg.port,
                     why=why)

    def _on_event(self, name: str, keys: dict) -> None:
        if name == "FullyBooted":
            # Asterisk sends it after each login once it is up; an Originate
            # before it is dropped ("PBX requires Asterisk to be fully booted")
            if self.connected and not self.booted:
                self.booted = True
                self._tick()
            return
        handler = {"Newchannel": self._newchannel, "Hangup": self._hangup,
                   "OriginateResponse": self._originate_response}.get(name)
        if handler is None or not self.running:
            return
        self.stats["events"] += 1
        self._track(as_deferred(handler(keys)), f"recording {name}")

    def _msisdn(self, number: str | None) -> str | None:
        try:
            return normalize(number or "", self.core.settings.region)
        except MsisdnError:
            return None

    async def _newchannel(self, k: dict) -> None:
        uid = k.get("Uniqueid") or ""
        if len(self._channel_start) >= MAX_OPEN_CHANNELS:      # hang-ups missed while the link was down
            self._channel_start.clear()
        self._channel_start[uid] = self.reactor.seconds()
        await self.calls.record_event(uid, "newchannel", channel=k.get("Channel"),
                                      msisdn=self._msisdn(k.get("CallerIDNum")),
                                      detail={"context": k.get("Context"), "exten": k.get("Exten")})

    async def _hangup(self, k: dict) -> None:
        uid = k.get("Uniqueid") or ""
        started = self._channel_start.pop(uid, None)
        duration = None if started is None else int(round(self.reactor.seconds() - started))
        await self.calls.record_event(uid, "hangup", channel=k.get("Channel"),
                                      msisdn=self._msisdn(k.get("CallerIDNum")), cause=k.get("Cause"),
                                      duration_s=duration, detail={"cause_txt": k.get("Cause-txt")})

    async def _originate_response(self, k: dict) -> None:
        action_id = k.get("ActionID") or ""
        answered = (k.get("Response") or "").lower() == "success"
        uid = k.get("Uniqueid")
        await self.calls.record_event(uid if uid and uid != "<null>" else action_id,
                                      "originate" if answered else "originate_failed", channel=k.get("Channel"),
                                      cause=k.get("Reason"), detail={"action_id": action_id})
        if not action_id.startswith(ACTION_PREFIX):
            return                                   # not one of ours
        if answered:
            if await self.callbacks.answered(action_id):
                self.stats["answered"] += 1
                log.info("AMI: call-back {aid} answered", aid=action_id)
        else:
            await self._attempt_failed(action_id, f"originate failed (reason {k.get('Reason')})")

    async def _attempt_failed(self, action_id: str, error: str) -> None:
        state = await self.callbacks.attempt_failed(action_id, error)
        if state is None:
            return
        self.stats["attempts_failed"] += 1
        log.warn("AMI: call-back {aid}: {error}; now {state}", aid=action_id, error=error, state=state)
        if state == FAILED:
            # the subscriber waits for a call that will not come: say so (by SMS, through the channels)
            row = await self.callbacks.by_action(action_id)
            if row is not None:
                await self.core.service.notify(row["msisdn"], Result(Outcome.OK, params={"action": "callback_failed"}))

    # -- dialling

    def _tick(self) -> None:
        if not self.running:
            return
        if self._dialling:
            self._again = True
            return
        self._track(as_deferred(self._dial_due()), "dialling call-backs")

    async def _dial_due(self) -> None:
        self._dialling = True
        try:
            while True:
                self._again = False
                for row in await self.callbacks.stale():
                    await self._attempt_failed(row["action_id"] or "", "no outcome from the switch")
                if not (self.connected and self.booted):
                    return
                for row in await self.callbacks.due():
                    if not (self.running and self.connected and self.booted):
                        return
                    await self._dial(row)
                if not self._again:
                    return
        finally:
            self._dialling = False

    async def _dial(self, row: dict) -> None:
        cfg, msisdn = self.cfg, row["msisdn"]
        action_id = f"{ACTION_PREFIX}{row['id']}-{row['attempts'] + 1}-{uuid.uuid4().hex[:8]}"
        if not await self.callbacks.claim(row["id"], action_id):
            return                                   # another instance took it
        try:
            local = local_form(msisdn, self.core.settings.region)
        except Exception:
            local = msisdn
        fields = {"Channel": cfg.channel.format(msisdn=msisdn, local=local), "Context": cfg.context,
                  "Exten": cfg.exten, "Priority": cfg.priority, "CallerID": cfg.caller_id,
                  "Timeout": int(cfg.ring_timeout * 1000), "Async": "true"}
        variables = {"TP_MSISDN": msisdn, "TP_CALLBACK_ID": str(row["id"])}
        try:
            answer = await wait_deferred(self.link.originate(action_id, fields, variables))
        except Exception as exc:
            await self.callbacks.release(action_id, f"not sent: {type(exc).__name__}")
            log.warn("AMI: call-back {aid} to {msisdn} not sent ({err}); it stays requested", aid=action_id,
                     msisdn=mask(msisdn), err=type(exc).__name__)
            return
        self.stats["originated"] += 1
        if answer is None:
            log.warn("AMI: no answer to the Originate {aid}; its outcome is awaited", aid=action_id)
            return
        status, keys = answer
        if status.lower() != "success":
            await self.calls.record_event(action_id, "originate_failed", detail={
                "action_id": action_id, "message": keys.get("Message")})
            await self._attempt_failed(action_id, f"refused: {keys.get('Message') or status}")
            return
        log.info("AMI: calling {msisdn} back ({aid})", msisdn=mask(msisdn), aid=action_id)


def make_ami(core: Core, cfg: dict, reactor) -> AmiService:
    """The daemon's factory for `[ami]`."""
    return AmiService(core, AmiConfig.from_config(cfg, core.settings.service_number), reactor)
