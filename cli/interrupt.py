"""SIGTERM and SIGHUP (what ``timeout``, a CI cancel or a closed terminal send) handled like ^C:
while active they raise ``KeyboardInterrupt`` in the main thread, so the command's cleanup runs
(workers stopped, partial statistics printed) and it exits 130 instead of dying mid-write."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def signals_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
