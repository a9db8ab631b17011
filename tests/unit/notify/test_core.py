"""The notifier with fake sinks: submit never waits for a sink, sinks do not wait
for each other, a full queue drops its oldest event (logged once per burst),
failures are counted and logged in one short line, and close() delivers what is
queued, gives up on a stuck sink at its timeout and wakes a sink that waits on
`stop`. Blocking sinks wait on threading.Events, never on the clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from oomlens.notify import DeliveryFailed, Notice, Notifier, Sink
from oomlens.notify.core import one_line

WAIT = 10.0  # seconds a test waits for a thread before failing; never reached when passing


class Recorder:
    """A sink that keeps what it receives; `got` is released once per event."""

    def __init__(self, name: str = "recorder") -> None:
        self.notices: list[Notice] = []
        self.got = threading.Semaphore(0)
        self.sink = Sink(name, self._deliver)

    def _deliver(self, notice: Notice, stop: threading.Event) -> None:
        self.notices.append(notice)
        self.got.release()

    @property
    def ids(self) -> list[Any]:
        return [notice.event["id"] for notice in self.notices]


class Gate:
    """A sink that holds each event in deliver until let through (or opened for
    good); `received` lists the ids that entered, in order."""

    def __init__(self, name: str = "gate") -> None:
        self.received: list[Any] = []
        self._cond = threading.Condition()
        self._permits = 0
        self._opened = False
        self.sink = Sink(name, self._deliver)

    def _deliver(self, notice: Notice, stop: threading.Event) -> None:
        with self._cond:
            self.received.append(notice.event["id"])
            self._cond.notify_all()
            assert self._cond.wait_for(lambda: self._opened or self._permits > 0, WAIT)
            if not self._opened:
                self._permits -= 1

    def wait_entered(self, count: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.received) >= count, WAIT)

    def let_through(self, count: int = 1) -> None:
        with self._cond:
            self._permits += count
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._opened = True
            self._cond.notify_all()


class Log(list[str]):
    def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.open()  # whatever a test did, its worker thread can end
    join_notify_threads()


def join_notify_threads() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("oomlens-notify"):
            thread.join(WAIT)
            assert not thread.is_alive(), thread.name


def numbered(count: int) -> list[dict[str, Any]]:
    return [{"id": number, "kind": "kernel"} for number in range(1, count + 1)]


class TestSubmit:
    def test_every_sink_gets_the_event_and_its_json(self, log: Log,
                                                    event: dict[str, Any]) -> None:
        first, second = Recorder("first"), Recorder("second")
        with Notifier([first.sink, second.sink], log=log) as notifier:
            notifier.submit(event)
        assert [n.event for n in first.notices] == [event] == [n.event for n in second.notices]
        assert json.loads(first.notices[0].json) == event
        assert "\n" not in first.notices[0].json
        assert (notifier.delivered, notifier.failures, notifier.dropped) == (2, 0, 0)
        assert log == []

    def test_submit_returns_while_a_sink_is_blocked_and_other_sinks_go_on(
            self, log: Log, gate: Gate) -> None:
        recorder = Recorder()
        notifier = Notifier([gate.sink, recorder.sink], log=log)
        notifier.submit({"id": 1})
        assert gate.wait_entered(1)
        notifier.submit({"id": 2})  # returns although the gate holds event 1
        gate.open()
        notifier.close()
        assert recorder.ids == [1, 2]
        assert gate.received == [1, 2]
        assert notifier.delivered == 4

    def test_json_is_encoded_at_submit_so_later_changes_are_not_sent(self, log: Log) -> None:
        recorder = Recorder()
        event = {"id": 1, "host": "db1"}
        with Notifier([recorder.sink], log=log) as notifier:
            notifier.submit(event)
            event["host"] = "changed"
        assert json.loads(recorder.notices[0].json)["host"] == "db1"

    def test_an_event_that_is_not_json_is_logged_not_raised(self, log: Log) -> None:
        recorder = Recorder()
        with Notifier([recorder.sink], log=log) as notifier:
            notifier.submit({"id": 3, "when": object()})
        assert recorder.notices == []
        assert notifier.undelivered == 1
        assert len(log) == 1 and log[0].startswith("notify: event 3 is not JSON")

    def test_submit_after_close_is_counted_not_delivered(self, log: Log) -> None:
        recorder = Recorder()
        notifier = Notifier([recorder.sink], log=log)
        notifier.close()
        notifier.submit({"id": 1})
        assert recorder.notices == [] and notifier.undelivered == 1

    def test_queue_size_must_be_positive(self, log: Log) -> None:
        with pytest.raises(ValueError, match="queue_size"):
            Notifier([], queue_size=0, log=log)


class TestOverflow:
    def test_a_full_queue_drops_the_oldest_and_counts_it(self, log: Log, gate: Gate) -> None:
        notifier = Notifier([gate.sink], queue_size=2, log=log)
        events = numbered(5)
        notifier.submit(events[0])
        assert gate.wait_entered(1)  # event 1 in flight, the queue empty
        for item in events[1:]:
            notifier.submit(item)  # 2, 3 fill the queue; 4 drops 2; 5 drops 3
        assert notifier.dropped == 2
        gate.open()
        notifier.close()
        assert gate.received == [1, 4, 5]
        assert (notifier.delivered, notifier.dropped, notifier.undelivered) == (3, 2, 0)

    def test_drops_are_logged_once_per_burst(self, log: Log, gate: Gate) -> None:
        notifier = Notifier([gate.sink], queue_size=1, log=log)
        notifier.submit({"id": 1})
        assert gate.wait_entered(1)
        for number in (2, 3, 4, 5):  # one burst: 3, 4, 5 each drop the one before
            notifier.submit({"id": number})
        assert notifier.dropped == 3
        assert log == ["notify gate: queue full (1 events), dropping the oldest until it "
                       "catches up"]
        gate.let_through(1)
        assert gate.wait_entered(2)  # event 5 taken: the queue has room again
        notifier.submit({"id": 6})  # fits: the burst is over
        notifier.submit({"id": 7})  # a new burst
        assert notifier.dropped == 4
        assert len(log) == 2
        gate.open()
        notifier.close()

    def test_each_sink_has_its_own_queue(self, log: Log, gate: Gate) -> None:
        recorder = Recorder()
        notifier = Notifier([gate.sink, recorder.sink], queue_size=1, log=log)
        for number in (1, 2, 3, 4):
            notifier.submit({"id": number})
            assert recorder.got.acquire(timeout=WAIT)  # the recorder keeps up
            assert gate.wait_entered(1)  # the gate holds event 1 throughout
        gate.open()
        notifier.close()
        assert recorder.ids == [1, 2, 3, 4]
        assert gate.received == [1, 4]
        assert notifier.dropped == 2
        assert all(line.startswith("notify gate:") for line in log)


class TestFailures:
    def test_a_failed_delivery_is_counted_and_logged_in_one_short_line(
            self, log: Log, event: dict[str, Any]) -> None:
        def fail(notice: Notice, stop: threading.Event) -> None:
            raise DeliveryFailed("exit status 3: disk\nfull\x1b[31m")

        with Notifier([Sink("exec", fail)], log=log) as notifier:
            notifier.submit(event)
        assert (notifier.delivered, notifier.failures) == (0, 1)
        assert log == ["notify exec: event 17: exit status 3: disk full [31m"]
        assert event["key"] not in log[0]

    def test_an_unexpected_error_is_a_failure_and_the_worker_goes_on(self, log: Log) -> None:
        received: list[int] = []

        def flaky(notice: Notice, stop: threading.Event) -> None:
            if notice.event["id"] == 1:
                raise KeyError("victim")
            received.append(notice.event["id"])

        with Notifier([Sink("flaky", flaky)], log=log) as notifier:
            notifier.submit({"id": 1})
            notifier.submit({"id": 2})
        assert received == [2]
        assert (notifier.delivered, notifier.failures) == (1, 1)
        assert log == ["notify flaky: event 1: KeyError: 'victim'"]


class TestClose:
    def test_close_delivers_what_is_queued(self, log: Log, gate: Gate) -> None:
        notifier = Notifier([gate.sink], log=log)
        for item in numbered(3):
            notifier.submit(item)
        gate.open()
        notifier.close()
        assert gate.received == [1, 2, 3] and notifier.delivered == 3

    def test_a_stuck_sink_is_abandoned_at_the_timeout_and_its_events_counted(
            self, log: Log, gate: Gate) -> None:
        notifier = Notifier([gate.sink], log=log)
        notifier.submit({"id": 1})
        notifier.submit({"id": 2})
        assert gate.wait_entered(1)
        notifier.close(timeout=0.05)  # returns although event 1 never completes
        assert notifier.stuck == ("gate",)
        assert (notifier.undelivered, notifier.delivered, notifier.failures) == (2, 0, 0)
        assert log == ["notify gate: still busy after 0.05 s at exit, 2 event(s) not delivered"]
        gate.open()
        join_notify_threads()
        assert gate.received == [1]  # the queued event 2 was not delivered later
        assert notifier.delivered == 0  # nor event 1 counted once it completed

    def test_close_wakes_a_sink_that_waits_on_stop(self, log: Log) -> None:
        waiting = threading.Event()
        woke: list[bool] = []

        def backoff(notice: Notice, stop: threading.Event) -> None:
            waiting.set()
            woke.append(stop.wait(WAIT))
            raise DeliveryFailed("stopped before retrying")

        notifier = Notifier([Sink("slow", backoff)], log=log)
        notifier.submit({"id": 1})
        assert waiting.wait(WAIT)
        notifier.close(timeout=0)
        join_notify_threads()
        assert woke == [True]
        assert notifier.stuck == ("slow",) and notifier.undelivered == 1
        assert notifier.failures == 0  # abandoned: its late failure is not counted

    def test_close_is_idempotent_and_joins_the_workers(self, log: Log) -> None:
        notifier = Notifier([Recorder().sink, Recorder("other").sink], log=log)
        notifier.close()
        notifier.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("oomlens-notify")]
        assert notifier.stuck == ()

    def test_workers_are_daemon_threads(self, log: Log) -> None:
        with Notifier([Recorder().sink], log=log):
            threads = [t for t in threading.enumerate() if t.name == "oomlens-notify recorder"]
            assert [t.daemon for t in threads] == [True]


class TestOneLine:
    def test_control_characters_become_spaces(self) -> None:
        assert one_line("a\nb\tc\x1b[0m\r\n") == "a b c [0m"

    def test_long_text_is_cut(self) -> None:
        assert one_line("x" * 500, limit=10) == "x" * 9 + "…"
