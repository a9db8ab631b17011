"""The webhook sink: the event's JSON POSTed to a URL, with retries.

Only what a retry can fix is retried: 5xx, 429 and network errors (refused, reset,
no answer in time). Any other answer is final: a 404 or 401 stays wrong however
often it is asked, and a redirect is not followed (a POST turned into a GET would
count as delivered without the event). urllib is imported only when a webhook is
configured, keeping the watcher's start lean.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from oomlens import __version__
from oomlens.errors import UsageError
from oomlens.notify.core import DeliveryFailed, Notice, Sink

if TYPE_CHECKING:
    import urllib.request
    from email.message import Message

# Where a server may say when to come back (RFC 9110 §10.2.3).
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A validated webhook URL. `url` has no user:password (those become the
    Authorization header); `display` is scheme://host[:port], the only part that is
    logged, since paths and queries often carry the token (Slack, Discord)."""

    url: str
    display: str
    authorization: str | None


class Answer(NamedTuple):
    """Why an attempt did not deliver, whether another may, and the server's
    Retry-After in seconds (None when it sent none)."""

    reason: str
    retry: bool
    retry_after: float | None = None


def parse_endpoint(url: str) -> Endpoint:
    """Check a webhook URL: http or https, with a host and a valid port, in
    printable ASCII (http.client would refuse anything else only when sending)."""
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UsageError(f"webhook URL {url!r} has spaces, control or non-ASCII "
                         "characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise UsageError(f"webhook URL {url!r} is not valid: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise UsageError(f"webhook URL {url!r} must be http:// or https:// with a host")
    host = parts.netloc.rpartition("@")[2]
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Endpoint(url=urlunsplit((parts.scheme, host, parts.path, parts.query, "")),
                    display=f"{parts.scheme}://{host}", authorization=authorization)


def retry_delay(attempt: int, retry_after: float | None, *, backoff: float,
                backoff_max: float) -> float:
    """Seconds to wait before retry number `attempt` (0 first): the server's
    Retry-After where it sent one, else `backoff` doubled per attempt; never more
    than `backoff_max` (a server asking for an hour must not park the queue)."""
    wanted = retry_after if retry_after is not None else backoff * 2 ** attempt
    return min(wanted, backoff_max)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as delay-seconds; None for none or the HTTP-date form (rare
    for webhooks, and a clock skew away from meaning anything)."""
    if value is None or not (value := value.strip()).isascii() or not value.isdigit():
        return None
    return float(value)


def status_answer(status: int, headers: Message) -> Answer:
    """The answer of a non-2xx status (the phrase is ours, not the server's text)."""
    from http import HTTPStatus

    try:
        reason = f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        reason = f"HTTP {status}"
    if status in _RETRY_AFTER_STATUSES:
        return Answer(reason, True, parse_retry_after(headers.get("Retry-After")))
    return Answer(reason, status >= 500)


def post_once(opener: urllib.request.OpenerDirector, request: urllib.request.Request,
              timeout: float) -> Answer | None:
    """One POST: None when the server answered 2xx."""
    import http.client
    import urllib.error

    try:
        with opener.open(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        with err:
            return status_answer(err.code, err.headers)
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        cause = err.reason if isinstance(err, urllib.error.URLError) else err
        if isinstance(cause, TimeoutError):
            return Answer(f"no answer within {timeout:g} s", True)
        if isinstance(cause, OSError) and cause.strerror:
            return Answer(cause.strerror, True)
        return Answer(str(cause) or type(cause).__name__, True)


def _opener() -> urllib.request.OpenerDirector:
    import urllib.request
    from typing import IO

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        """Turns a redirect into an HTTPError (final: see the module docstring)."""

        def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                             msg: str, headers: Message, newurl: str) -> None:
            return None

    return urllib.request.build_opener(NoRedirect)


def webhook_sink(url: str, *, timeout: float = 5.0, retries: int = 5, backoff: float = 0.5,
                 backoff_max: float = 30.0) -> Sink:
    """POST each event as JSON to `url`; up to `retries` more attempts after one
    that a retry may fix. Raises UsageError for a URL that is not http(s)."""
    import urllib.request

    if retries < 0:
        raise ValueError(f"retries must not be negative, not {retries}")
    endpoint = parse_endpoint(url)
    opener = _opener()
    headers = {"Content-Type": "application/json", "User-Agent": f"oomlens/{__version__}"}
    if endpoint.authorization is not None:
        headers["Authorization"] = endpoint.authorization

    def deliver(notice: Notice, stop: threading.Event) -> None:
        request = urllib.request.Request(endpoint.url, data=notice.json.encode(),
                                         headers=headers, method="POST")
        for attempt in range(retries + 1):
            answer = post_once(opener, request, timeout)
            if answer is None:
                return
            if not answer.retry:
                raise DeliveryFailed(f"{answer.reason} (not retried)")
            if attempt == retries:
                raise DeliveryFailed(f"{answer.reason}; gave up after {retries + 1} attempts")
            delay = retry_delay(attempt, answer.retry_after, backoff=backoff,
                                backoff_max=backoff_max)
            if stop.wait(delay):
                raise DeliveryFailed(f"{answer.reason}; stopped before retrying")

    return Sink(f"webhook {endpoint.display}", deliver)
