"""`oomlens exporter`: serve Prometheus metrics (oomlens/metrics.py) until SIGTERM or
SIGINT, or print one scrape with `--once`.

A store that is missing or down is not a failure: its metrics are absent and
`oomlens_up{part="store"}` is 0, while memory, pressure and the next victims are
still served; a one-line note on stderr says why, and another when it works again.
A malformed store URL is a usage error, though: no scrape could ever read it.
"""

from __future__ import annotations

import argparse
import select

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.protect_args import state_dir_of
from oomlens.daemons.signals import Signals
from oomlens.metrics import PartReporter, render_once, serve, store_collector
from oomlens.store.db import default_store_url
from oomlens.store.urls import parse_url


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    url = args.store or default_store_url(state_dir_of(args, env))
    display = parse_url(url).display  # checks the URL; no password in the output
    collector = store_collector(url, env.proc_root, _reporter(env))
    if args.once:
        env.stdout.write(render_once(collector).decode())
        return ExitStatus.OK
    server = serve(args.listen, collector)
    try:
        # After a successful bind (a bad address leaves the signals alone), before
        # the first line: a SIGTERM sent on seeing it is handled.
        with Signals() as signals:
            # One collection at start, so that a part that cannot work (no store yet)
            # is told now, not at Prometheus' first scrape.
            for _family in collector.collect():
                pass
            env.stdout.write(f"oomlens exporter: serving {server.url} (kills from {display})\n")
            env.stdout.flush()
            _wait_for_stop(signals)
    finally:
        server.close()
    return ExitStatus.OK


def _reporter(env: Env) -> PartReporter:
    def report(part: str, problem: str | None) -> None:
        if problem is None:
            env.stderr.write(f"oomlens exporter: {part} metrics: work again\n")
        else:
            env.stderr.write(f"oomlens exporter: {part} metrics absent: {problem}\n")
        env.stderr.flush()
    return report


def _wait_for_stop(signals: Signals) -> None:
    """Sleep in poll() until SIGTERM or SIGINT; the signal pipe wakes it (a signal
    between the check and poll() is not lost: its byte is already in the pipe)."""
    poller = select.poll()
    poller.register(signals.fileno(), select.POLLIN)
    while not signals.stop:
        poller.poll()
        signals.drain()
