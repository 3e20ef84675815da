"""The daemon's buffered log observer: same lines as Twisted's classic
text, routine ones buffered, warnings and tracebacks written at once."""
import io
import time

from twisted.logger import LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure

from telecom_pay.logfile import BufferedLogObserver


def _event(level, fmt, **kw):
    return {"log_level": level, "log_format": fmt, "log_namespace": "telecom_pay.sms",
            "log_time": time.time(), **kw}


def test_routine_lines_match_twisted_classic_text_and_wait_for_a_flush():
    out = io.StringIO()
    obs = BufferedLogObserver(out, flush_interval=3600)
    event = _event(LogLevel.info, "sms in {msisdn} len={n}", msisdn="138****8000", n=2)
    obs(event)
    assert out.getvalue() == ""                       # buffered
    obs.flush()
    assert out.getvalue() == formatEventAsClassicLogText(event)


def test_a_warning_goes_out_at_once_with_the_lines_before_it():
    out = io.StringIO()
    obs = BufferedLogObserver(out, flush_interval=3600)
    first = _event(LogLevel.info, "one")
    warn = _event(LogLevel.warn, "bind {name} down", name="smsc-a")
    obs(first)
    obs(warn)
    assert out.getvalue() == formatEventAsClassicLogText(first) + formatEventAsClassicLogText(warn)


def test_a_traceback_is_written_in_full_at_once():
    out = io.StringIO()
    obs = BufferedLogObserver(out, flush_interval=3600)
    try:
        1 / 0
    except ZeroDivisionError:
        failure = Failure()
    obs(_event(LogLevel.info, "answering failed", log_failure=failure))
    assert "ZeroDivisionError" in out.getvalue() and "Traceback" in out.getvalue()


def test_the_flusher_thread_writes_buffered_lines_without_being_asked():
    out = io.StringIO()
    obs = BufferedLogObserver(out, flush_interval=0.05)
    obs(_event(LogLevel.info, "ready"))
    deadline = time.time() + 5
    while "ready" not in out.getvalue() and time.time() < deadline:
        time.sleep(0.01)
    assert "ready" in out.getvalue()
