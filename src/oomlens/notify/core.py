"""The notifier: one worker thread and one bounded queue per sink, so that a slow or
failing sink delays neither the watcher nor the other sinks.

The watcher's loop is what must never stall: `submit()` only appends to in-memory
queues under a short lock. When a sink falls behind, its queue drops the oldest
event, because during an OOM storm the newest kill is the one an operator acts on.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

Log = Callable[[str], None]

# Longest piece of foreign text (a hook's stderr, an HTTP reason) put in a log line.
_LOG_TEXT_MAX = 160


class DeliveryFailed(Exception):
    """A sink could not deliver an event; the message is one short line for the log."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One event as every sink receives it: the mapping, for the fields a sink
    picks out, and its JSON text, encoded once at submit time so that a caller
    changing its dict afterwards cannot change what is sent."""

    event: Mapping[str, Any]
    json: str


@dataclass(frozen=True, slots=True)
class Sink:
    """A destination. `deliver` returns when the event is delivered and raises
    `DeliveryFailed` when it is not; `stop` is set when the notifier gives up
    waiting at close, so a sink that sleeps between retries wakes and stops."""

    name: str
    deliver: Callable[[Notice, threading.Event], None]


def one_line(text: str, limit: int = _LOG_TEXT_MAX) -> str:
    """Foreign text made safe for a one-line log: control characters (newlines,
    escape sequences) become spaces, and it is cut at `limit` characters."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def event_label(event: Mapping[str, Any]) -> str:
    """How log lines name an event: its store id, else nothing more than `event`
    (log lines never carry the event itself)."""
    event_id = event.get("id")
    return f"event {event_id}" if isinstance(event_id, int) else "event"


class _Worker:
    """One sink's queue and thread. Counters change under `_cond`, the same lock
    that guards the queue, so `close()` can count what is left without races."""

    def __init__(self, sink: Sink, queue_size: int, log: Log, stop: threading.Event) -> None:
        self.sink = sink
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self._queue: deque[Notice] = deque()
        self._queue_size = queue_size
        self._log = log
        self._stop = stop
        self._cond = threading.Condition()
        self._in_flight = False
        self._finishing = False  # close(): deliver what is queued, then end
        self._abandoned = False  # close() gave up on this worker: count nothing more
        self._overflowing = False
        self.thread = threading.Thread(
            target=self._run, name=f"oomlens-notify {sink.name}", daemon=True
        )
        self.thread.start()

    def put(self, notice: Notice) -> str | None:
        """Queue `notice`, dropping the oldest when full; returns the log line when
        this starts a burst of drops (one line per burst, not per event)."""
        with self._cond:
            overflow = len(self._queue) >= self._queue_size
            if overflow:
                self._queue.popleft()
                self.dropped += 1
            burst_starts = overflow and not self._overflowing
            self._overflowing = overflow
            self._queue.append(notice)
            self._cond.notify()
        if not burst_starts:
            return None
        return (f"notify {self.sink.name}: queue full ({self._queue_size} events), "
                "dropping the oldest until it catches up")

    def finish(self) -> None:
        with self._cond:
            self._finishing = True
            self._cond.notify()

    def abandon(self) -> int:
        """Stop counting this worker's results; returns the events it leaves
        undelivered (queued, and the one in flight)."""
        with self._cond:
            self._abandoned = True
            left = len(self._queue) + self._in_flight
            self._queue.clear()
            return left

    def _next(self) -> Notice | None:
        with self._cond:
            while not self._queue and not self._finishing:
                self._cond.wait()
            if not self._queue:
                return None
            self._in_flight = True
            return self._queue.popleft()

    def _run(self) -> None:
        while (notice := self._next()) is not None:
            problem = self._attempt(notice)
            with self._cond:
                self._in_flight = False
                if self._abandoned:
                    return
                if problem is None:
                    self.delivered += 1
                else:
                    self.failures += 1
            if problem is not None:
                self._log(f"notify {self.sink.name}: {event_label(notice.event)}: {problem}")

    def _attempt(self, notice: Notice) -> str | None:
        """None when delivered, else why not. Any exception is caught: a bug or an
        OS error in one sink must not end its thread and silently stop it."""
        try:
            self.sink.deliver(notice, self._stop)
        except DeliveryFailed as err:
            return one_line(str(err))
        except Exception as err:  # the thread must outlive any sink's error
            return one_line(f"{type(err).__name__}: {err}")
        return None


class Notifier:
    """Hands each submitted event to every sink, in the background.

    `log` receives short one-line messages, from the workers' threads as well as
    the caller's; it must be safe to call from any thread.
    """

    def __init__(self, sinks: Sequence[Sink], *, queue_size: int = 100, log: Log) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self._log = log
        self._stop = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._workers = [_Worker(sink, queue_size, log, self._stop) for sink in sinks]
        self.undelivered = 0
        self.stuck: tuple[str, ...] = ()

    @property
    def delivered(self) -> int:
        return sum(worker.delivered for worker in self._workers)

    @property
    def failures(self) -> int:
        """Deliveries that failed for good (a sink's own retries are inside one)."""
        return sum(worker.failures for worker in self._workers)

    @property
    def dropped(self) -> int:
        """Events dropped because a sink's queue was full (counted once per sink)."""
        return sum(worker.dropped for worker in self._workers)

    def submit(self, event: Mapping[str, Any]) -> None:
        """Queue `event` for every sink; never waits for a sink. An event that is
        not JSON (a caller's bug) is logged and counted as undelivered rather than
        raised, since the caller is the watcher's loop."""
        try:
            text = json.dumps(event, separators=(",", ":"))
        except (TypeError, ValueError) as err:
            with self._lock:
                self.undelivered += 1
            self._log(f"notify: {event_label(event)} is not JSON: {one_line(str(err))}")
            return
        notice = Notice(event, text)
        with self._lock:
            if self._closed:
                self.undelivered += 1
                return
            bursts = [worker.put(notice) for worker in self._workers]
        for line in bursts:
            if line is not None:
                self._log(line)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within `timeout` seconds, then stop.

        Workers still busy at the deadline are abandoned (named in `stuck`; their
        queued and in-flight events counted in `undelivered`) and told to stop;
        they are daemon threads, so they cannot keep the process alive."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.finish()
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        stuck: list[str] = []
        for worker in self._workers:
            # A worker with nothing left was only on its way out when the time ran out.
            left = worker.abandon() if worker.thread.is_alive() else 0
            if left:
                stuck.append(worker.sink.name)
                with self._lock:
                    self.undelivered += left
                self._log(f"notify {worker.sink.name}: still busy after {timeout:g} s at "
                          f"exit, {left} event(s) not delivered")
        self.stuck = tuple(stuck)
        self._stop.set()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
