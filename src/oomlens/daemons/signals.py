"""Signals for the daemons' poll() loops (enforce, watch): SIGHUP and SIGTERM/SIGINT
become flags, and a pipe wakes the loop."""

from __future__ import annotations

import os


class Signals:
    """SIGHUP (reload) and SIGTERM/SIGINT (stop) as flags, plus a pipe that wakes the
    loop's poll() (signal.set_wakeup_fd), so a signal is handled at once and never
    interrupts a write half-way."""

    def __init__(self) -> None:
        import signal

        self.reload = False
        self.stop = False
        self._read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)

    def _on_hup(self, *_: object) -> None:
        self.reload = True

    def _on_stop(self, *_: object) -> None:
        self.stop = True

    def fileno(self) -> int:
        return self._read

    def drain(self) -> None:
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass
