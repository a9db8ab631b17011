"""The webhook sink against a real HTTP server on 127.0.0.1 (a port of its own per
test): what is retried (5xx, 429, refused, no answer) and what is not (other 4xx,
redirects), Retry-After, the request itself, and URL validation. Back-off waits go
through `stop.wait`, so a recording `stop` shows each wait without sleeping."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from oomlens import __version__
from oomlens.errors import UsageError
from oomlens.notify import DeliveryFailed, Notice, Notifier, webhook_sink
from oomlens.notify.webhook import parse_retry_after, retry_delay

Reply = tuple[int, dict[str, str]]
OK: Reply = (200, {})


class RecordingStop(threading.Event):
    """A `stop` that is never set and returns at once, keeping each wait asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return False


class Server:
    """Answers each POST with the next scripted reply and records the requests."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append((self.path, dict(self.headers), body))
                status, headers = server.replies.pop(0) if server.replies else OK
                self.send_response(status)
                for name, value in {"Content-Length": "0", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/T0K3N"
        # A short poll interval: shutdown() waits for the next poll.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not stand between us and 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


def notice(event: dict[str, Any]) -> Notice:
    return Notice(event, json.dumps(event, separators=(",", ":")))


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestDelivery:
    def test_two_500s_then_200_is_delivered_with_the_event_as_body(
            self, server: Server, event: dict[str, Any]) -> None:
        server.replies = [(500, {}), (500, {}), OK]
        stop = RecordingStop()
        webhook_sink(server.url, backoff=0.25, retries=5).deliver(notice(event), stop)
        assert len(server.requests) == 3
        path, headers, body = server.requests[-1]
        assert path == "/hooks/T0K3N"
        assert json.loads(body) == event
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"] == f"oomlens/{__version__}"
        assert stop.waits == [0.25, 0.5]  # doubled per retry

    def test_through_the_notifier_it_counts_one_delivery(
            self, server: Server, event: dict[str, Any]) -> None:
        server.replies = [(502, {}), OK]
        lines: list[str] = []
        sink = webhook_sink(server.url, backoff=0.001)
        with Notifier([sink], log=lines.append) as notifier:
            notifier.submit(event)
        assert (notifier.delivered, notifier.failures, len(server.requests)) == (1, 0, 2)
        assert lines == []

    @pytest.mark.parametrize("status", [429, 503])
    def test_retry_after_seconds_are_honoured(self, server: Server, status: int,
                                              event: dict[str, Any]) -> None:
        server.replies = [(status, {"Retry-After": "7"}), OK]
        stop = RecordingStop()
        webhook_sink(server.url, backoff=0.001).deliver(notice(event), stop)
        assert stop.waits == [7.0] and len(server.requests) == 2

    def test_retry_after_is_capped_by_backoff_max(self, server: Server,
                                                  event: dict[str, Any]) -> None:
        server.replies = [(429, {"Retry-After": "3600"}), OK]
        stop = RecordingStop()
        webhook_sink(server.url, backoff_max=2.0).deliver(notice(event), stop)
        assert stop.waits == [2.0]

    def test_a_404_is_not_retried(self, server: Server, event: dict[str, Any]) -> None:
        server.replies = [(404, {})]
        lines: list[str] = []
        with Notifier([webhook_sink(server.url, backoff=0.001)], log=lines.append) as notifier:
            notifier.submit(event)
        assert (len(server.requests), notifier.failures, notifier.delivered) == (1, 1, 0)
        port = server.httpd.server_address[1]
        assert lines == [f"notify webhook http://127.0.0.1:{port}: event 17: "
                         "HTTP 404 Not Found (not retried)"]

    def test_a_redirect_is_not_followed(self, server: Server, event: dict[str, Any]) -> None:
        server.replies = [(301, {"Location": server.url + "/moved"})]
        with pytest.raises(DeliveryFailed, match=r"^HTTP 301 Moved Permanently \(not retried\)$"):
            webhook_sink(server.url).deliver(notice(event), RecordingStop())
        assert len(server.requests) == 1

    def test_500s_until_the_retries_run_out(self, server: Server,
                                            event: dict[str, Any]) -> None:
        server.replies = [(500, {})] * 3
        stop = RecordingStop()
        with pytest.raises(DeliveryFailed) as failed:
            webhook_sink(server.url, retries=2, backoff=1, backoff_max=1.5).deliver(
                notice(event), stop)
        assert str(failed.value) == "HTTP 500 Internal Server Error; gave up after 3 attempts"
        assert stop.waits == [1, 1.5]

    def test_connection_refused_is_retried_then_fails(self, event: dict[str, Any]) -> None:
        stop = RecordingStop()
        with pytest.raises(DeliveryFailed) as failed:
            webhook_sink(f"http://127.0.0.1:{free_port()}/", retries=2, backoff=0.5).deliver(
                notice(event), stop)
        assert str(failed.value) == "Connection refused; gave up after 3 attempts"
        assert stop.waits == [0.5, 1.0]

    def test_a_server_that_never_answers_hits_the_timeout(self, event: dict[str, Any]) -> None:
        with socket.socket() as silent:  # accepts connections (backlog), never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
            with pytest.raises(DeliveryFailed, match=r"^no answer within 0.2 s; gave up"):
                webhook_sink(url, timeout=0.2, retries=0).deliver(notice(event),
                                                                   RecordingStop())

    def test_close_ends_a_back_off_and_counts_the_event_undelivered(
            self, server: Server, event: dict[str, Any]) -> None:
        server.replies = [(500, {})]
        lines: list[str] = []
        notifier = Notifier([webhook_sink(server.url, backoff=600, backoff_max=600)],
                            log=lines.append)
        notifier.submit(event)
        notifier.close(timeout=0.2)  # the worker waits 600 s before its retry
        assert notifier.undelivered == 1 and notifier.failures == 0
        assert len(notifier.stuck) == 1
        for thread in threading.enumerate():
            if thread.name.startswith("oomlens-notify"):
                thread.join(10)
                assert not thread.is_alive()  # stop woke it from the back-off


class TestEndpoint:
    def test_credentials_become_basic_auth(self, server: Server,
                                           event: dict[str, Any]) -> None:
        port = server.httpd.server_address[1]
        sink = webhook_sink(f"http://alert:p%40ss@127.0.0.1:{port}/hooks/T0K3N")
        sink.deliver(notice(event), RecordingStop())
        _, headers, _ = server.requests[0]
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"alert:p@ss").decode()

    def test_the_name_in_logs_has_no_path_query_or_password(self) -> None:
        sink = webhook_sink("https://bot:hunter2@hooks.example.com:8443/services/T0K3N?key=k")
        assert sink.name == "webhook https://hooks.example.com:8443"

    @pytest.mark.parametrize("url", [
        "ftp://example.com/hook", "http://", "https:///path", "example.com/hook",
        "http://example.com:port/", "http://example.com:0/", "http://example.com/a b",
        "http://exämple.com/", "http://example.com/\n", "",
    ])
    def test_bad_urls_are_a_usage_error_in_one_line(self, url: str) -> None:
        with pytest.raises(UsageError) as raised:
            webhook_sink(url)
        assert "\n" not in str(raised.value).replace(repr(url), "")
        assert str(raised.value).startswith("webhook URL ")

    def test_negative_retries_are_refused(self) -> None:
        with pytest.raises(ValueError, match="retries"):
            webhook_sink("http://example.com/", retries=-1)


class TestRetryDelay:
    def test_backoff_doubles_up_to_the_cap(self) -> None:
        delays = [retry_delay(n, None, backoff=0.5, backoff_max=30) for n in range(8)]
        assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30]

    @pytest.mark.parametrize(("value", "seconds"), [
        ("120", 120.0), (" 5 ", 5.0), (None, None), ("", None), ("-1", None), ("1.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("٣", None),
    ])
    def test_parse_retry_after(self, value: str | None, seconds: float | None) -> None:
        assert parse_retry_after(value) == seconds
