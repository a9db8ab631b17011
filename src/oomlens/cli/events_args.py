"""Arguments of the commands over OOM events: watch, history and exporter (the
parsers only; cli/commands/ does the work)."""

from __future__ import annotations

import argparse

from oomlens.cli.argtypes import moment, positive_float, positive_int
from oomlens.cli.protect_args import json_option

# oomlens has no entry in Prometheus' port allocations (9100-9999, all taken since
# 2023): 9717 is only a default, on loopback; `--listen`/`--metrics ADDR` change it.
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9717"
STORE_HELP = ("event store: sqlite:///PATH or postgresql://USER@HOST/DB "
              "(default: events.sqlite in the state directory)")


def _store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the default store lives (default: /var/lib/oomlens as "
                        "root, $OOMLENS_STATE_DIR overrides)")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=moment, metavar="TIME", help="kills at or after TIME")
    parser.add_argument("--until", type=moment, metavar="TIME", help="kills at or before TIME")
    parser.add_argument("--host", help="kills on this host")
    parser.add_argument("--comm", metavar="NAME", help="kills of this process name")
    parser.add_argument("--cgroup", metavar="PATH", help="kills in this cgroup or below it")
    parser.add_argument("--finding", metavar="CODE", help="kills whose findings include CODE")
    parser.add_argument("--kind", choices=("kernel", "memcg", "lost", "guard"),
                        help="only events of this kind")


def add_event_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       epilog: str) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    watch = sub.add_parser(
        "watch", help="record every OOM kill as it happens (store, notify, metrics)",
        description="Follow the kernel log (/dev/kmsg, else journalctl -k -f) and memory "
        "cgroups' OOM events; store each kill with its diagnosis, print one line per kill. "
        "Kills the log lost are counted from /proc/vmstat oom_kill and stored as 'lost'.",
        epilog=epilog, formatter_class=raw)
    _store(watch)
    json_option(watch, "oomlens.event/1, one object per line")
    watch.add_argument("--cgroup", action="append", metavar="PATH", default=[],
                       help="watch this memory cgroup's OOM events (repeatable; "
                       "default: every cgroup with a memory limit)")
    watch.add_argument("--source", choices=("auto", "kmsg", "journal", "none"), default="auto",
                       help="kernel log to follow (auto: /dev/kmsg, else journalctl -k -f; "
                       "none: cgroup events and counters only)")
    watch.add_argument("--no-backfill", action="store_true",
                       help="do not store the kills still in the ring buffer at start")
    watch.add_argument("--once", action="store_true",
                       help="backfill and reconcile the counters, then exit")
    watch.add_argument("--exec", metavar="CMD", dest="exec_command",
                       help="run CMD (via sh -c) for each kill, the event JSON on its stdin")
    watch.add_argument("--exec-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                       help="kill CMD after this long (default 10)")
    watch.add_argument("--webhook", action="append", metavar="URL", default=[],
                       help="POST the event JSON to URL (repeatable; retried with back-off)")
    watch.add_argument("--desktop", action="store_true",
                       help="a desktop notification (notify-send) when a user session is "
                       "present")
    watch.add_argument("--metrics", metavar="ADDR", nargs="?", const=DEFAULT_METRICS_ADDRESS,
                       help="serve Prometheus metrics on ADDR (default "
                       f"{DEFAULT_METRICS_ADDRESS})")

    history = sub.add_parser(
        "history", help="stored OOM kills: list, show one, statistics",
        description="Without ACTION: the stored kills, newest last. `show ID` prints one in "
        "full (the report and its diagnosis); `stats` counts kills per day, victim, cgroup "
        "and finding, and lists victims that grow from one kill to the next.",
        epilog=epilog, formatter_class=raw)
    history.add_argument("action", nargs="?", choices=("list", "show", "stats"), default="list")
    history.add_argument("event_id", nargs="?", type=positive_int, metavar="ID",
                         help="the event to show (with `show`)")
    _filters(history)
    history.add_argument("--limit", type=positive_int, default=50, metavar="N",
                         help="list at most the last N kills (default 50)")
    _store(history)
    json_option(history, "oomlens.history/1")

    exporter = sub.add_parser(
        "exporter", help="serve Prometheus metrics: OOM kills, headroom, pressure",
        epilog=epilog, formatter_class=raw)
    exporter.add_argument("--listen", metavar="ADDR", default=DEFAULT_METRICS_ADDRESS,
                          help=f"address to serve on (default {DEFAULT_METRICS_ADDRESS})")
    exporter.add_argument("--once", action="store_true",
                          help="print the metrics once (text format) and exit")
    _store(exporter)
