"""Receiver watchdog: a rank waiting for a header longer than ``watchdog_s`` exits (os._exit) instead
of waiting for a long PG timeout.  Armed only while a control loop waits for the next header."""
from __future__ import annotations

import os
import threading
import time

from lockstep.tracefmt import schema as S

EXIT_WATCHDOG = 3


class Watchdog:
    def __init__(self, trace: S.TraceWriter, timeout_s: float, describe):
        self.trace, self.timeout_s, self.describe = trace, timeout_s, describe
        self._armed_at: float | None = None
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._run, name="lockstep-watchdog", daemon=True)
        self._t.start()

    def arm(self) -> None:
        with self._lock:
            self._armed_at = time.monotonic()

    def disarm(self) -> None:
        with self._lock:
            self._armed_at = None

    def _run(self) -> None:
        while True:
            time.sleep(min(0.25, self.timeout_s / 4))
            with self._lock:
                at = self._armed_at
            if at is not None and time.monotonic() - at > self.timeout_s:
                idle = time.monotonic() - at
                info = self.describe()
                self.trace.force(S.WATCHDOG_FIRED, idle_s=round(idle, 3), **info)
                self.trace.force(S.RANK_EXIT, how="timeout",
                                 message=f"watchdog: no header for {idle:.1f}s (> {self.timeout_s}s); last header {info}",
                                 **info)
                os._exit(EXIT_WATCHDOG)
