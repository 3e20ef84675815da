"""The daemon's log output: Twisted's classic text lines, written cheaply.

Twisted's `textFileLogObserver` formats each event's time through
`formatTime` and writes (one system call) per line; at a few log lines per
payment that was a tenth of the reactor thread's time. Here the timestamp
text is reused within the second, routine lines (debug, info, no traceback)
are buffered and flushed at least every FLUSH_INTERVAL seconds by a small
thread, and warnings, errors and tracebacks go out at once with everything
buffered before them, so the lines that matter are on disk before the
process can die. A SIGKILL can lose at most the last FLUSH_INTERVAL of
routine lines; the database, not the log, is the record of what happened.
"""
from __future__ import annotations

import atexit
import threading
import time
from typing import IO

from twisted.logger import LogLevel, formatEvent, formatEventAsClassicLogText

FLUSH_INTERVAL = 0.5
BUFFER_LIMIT = 64 * 1024
_ROUTINE = (LogLevel.debug, LogLevel.info)


class BufferedLogObserver:
    def __init__(self, out: IO[str], *, flush_interval: float = FLUSH_INTERVAL):
        self._out = out
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
        self._closed = False
        self._interval = flush_interval
        threading.Thread(target=self._flusher, name="log-flusher", daemon=True).start()
        atexit.register(self.flush)

    def __call__(self, event: dict) -> None:
        level = event.get("log_level")
        if level in _ROUTINE and "log_failure" not in event:
            line = f"{self._time(event.get('log_time'))} [{self._system(event, level)}] {formatEvent(event)}\n"
            urgent = False
        else:
            line = formatEventAsClassicLogText(event)
            urgent = True
        if not line:
            return
        with self._lock:
            self._lines.append(line)
            self._size += len(line)
            if urgent or self._size >= BUFFER_LIMIT:
                self._write_locked()

    def flush(self) -> None:
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        if not self._lines:
            return
        text, self._lines, self._size = "".join(self._lines), [], 0
        try:
            self._out.write(text)
            self._out.flush()
        except (OSError, ValueError):     # a closed or broken stderr: nothing better to do
            pass

    def _flusher(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()

    def _time(self, when: float | None) -> str:
        """Twisted's classic form (local time with offset), to the second."""
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            local = time.localtime(second)
            offset = local.tm_gmtoff
            sign = "+" if offset >= 0 else "-"
            offset = abs(offset)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local) + f"{sign}{offset // 3600:02d}{offset // 60 % 60:02d}"
            self._second = second
        return self._stamp

    @staticmethod
    def _system(event: dict, level) -> str:
        system = event.get("log_system")
        if system is not None:
            return str(system)
        return f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
