"""Signals for the daemons' poll() loops (enforce, watch): SIGHUP and SIGTERM/SIGINT
become flags, and a pipe wakes the loop."""

from __future__ import annotations

import os
import signal

_HANDLED = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


class Signals:
    """SIGHUP (reload) and SIGTERM/SIGINT (stop) as flags, plus a pipe that wakes the
    loop's poll() (signal.set_wakeup_fd), so a signal is handled at once and never
    interrupts a write half-way. A context manager: leaving it puts back the
    handlers and wake-up fd it found and closes the pipe (a daemon's loop run
    inside another program, or a test, leaves no trace)."""

    def __init__(self) -> None:
        self.reload = False
        self.stop = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self._write)
        self._previous = {number: signal.getsignal(number) for number in _HANDLED}
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)

    def __enter__(self) -> Signals:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._read < 0:
            return
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)
        self._read = self._write = -1

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
