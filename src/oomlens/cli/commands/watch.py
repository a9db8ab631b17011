"""`oomlens watch`: pick the sources, open the store, wire notifications and
metrics, print one line (or one JSON object) per kill; daemons/watch.py does the work."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.notifying import notifier_of
from oomlens.daemons.selfcare import HostInfo, host_info, protect_self
from oomlens.daemons.watch import (
    KmsgLog,
    LogReader,
    Watcher,
    WatchOptions,
    serve,
    victim_cgroup_reader,
)
from oomlens.errors import OomlensError, UsageError
from oomlens.store.record import EventKind, StoredEvent, record_json
from oomlens.units import format_bytes

if TYPE_CHECKING:
    from oomlens.metrics import MetricsServer
    from oomlens.store.db import Store
    from oomlens.system.cgroupevents import MemcgOomEvents
    from oomlens.system.memcg import MemcgMount

Log = Any


def describe(stored: StoredEvent) -> str:
    """One line per event, for people and for grep."""
    record = stored.record
    when = datetime.fromtimestamp(record.time).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    where = f"memcg {record.cgroup}" if record.scope == "memcg" and record.cgroup else (
        record.scope or "unknown scope")
    if record.kind == EventKind.LOST:
        return (f"{when}  LOST      {record.kills} OOM kill(s) not in the log: "
                f"{record.detail.get('reason', '')}  #{stored.id}")
    if record.kind == EventKind.MEMCG:
        return (f"{when}  OOM kill  {record.kills} kill(s) in memcg {record.cgroup} "
                f"(from its counter; no kernel log followed)  #{stored.id}")
    victim = f"{record.victim_comm} ({record.victim_pid})" if record.victim_pid else "no victim"
    size = "" if record.victim_rss_kb is None else f"  {format_bytes(record.victim_rss_kb * 1024)}"
    finding = f"  [{record.main_finding}]" if record.main_finding else ""
    partial = "" if record.complete else "  (partial report)"
    return f"{when}  OOM kill  {victim}{size}  {where}{finding}{partial}  #{stored.id}"


def _log_to(env: Env) -> Log:
    def log(entry: dict[str, Any]) -> None:
        now = datetime.now().astimezone().isoformat(timespec="milliseconds")
        details = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("event", "message"))
        message = entry.get("message", "")
        env.stderr.write(f"{now} oomlens watch: {entry['event']}: {message} {details}".rstrip()
                         + "\n")
        env.stderr.flush()
    return log


def _log_reader(args: argparse.Namespace, env: Env, log: Log) -> LogReader | None:
    """The kernel log to follow, or None (cgroup counters and /proc/vmstat only)."""
    if args.source == "none":
        return None
    if args.source in ("auto", "kmsg"):
        try:
            return KmsgLog(env.kmsg)
        except OomlensError as err:
            if args.source == "kmsg":
                raise
            kmsg_problem = str(err)
    from oomlens.system.journalk import JournalLog, journalctl_available

    if args.source == "journal" or journalctl_available():
        return JournalLog(backfill=not args.no_backfill)
    log({"event": "no_log", "message": f"{kmsg_problem}; no journalctl either: following "
         "memory cgroup counters and /proc/vmstat oom_kill only"})
    return None


def _cgroups(args: argparse.Namespace, mount: MemcgMount | None,
             log: Log) -> tuple[MemcgOomEvents | None, Callable[[MemcgOomEvents], None]]:
    """The memory cgroups to watch (the given ones, else every limited one), and
    how to add the ones that get a limit later."""
    import os

    from oomlens.system.cgroupevents import MemcgOomEvents
    from oomlens.system.memcg import limited_memcgs

    if mount is None:
        if args.cgroup:
            raise UsageError("--cgroup: this system has no memory cgroup controller")
        return None, lambda _events: None

    def rescan(events: MemcgOomEvents) -> None:
        watched = set(events.paths())
        # vm.swappiness only shapes v2 totalpages, not whether a limit is set.
        for memcg in limited_memcgs(mount, os.sysconf("SC_PAGE_SIZE"), 60):
            if memcg.path not in watched:
                try:
                    events.add(memcg.path)
                except OomlensError as err:  # removed since the walk
                    log({"event": "cgroup_skipped", "cgroup": memcg.path, "message": str(err)})

    events = MemcgOomEvents(mount)
    try:
        for path in args.cgroup:
            events.add(path)
        if not args.cgroup:
            rescan(events)
    except BaseException:
        events.close()
        raise
    return events, rescan


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    from oomlens.store.db import default_store_url, open_store

    as_json = getattr(args, "json", False)
    url = args.store or default_store_url(args.state_dir or env.state_dir)
    log = _log_to(env)
    notifier = notifier_of(args, env.proc_root, log)
    store: Store | None = None
    watcher: Watcher | None = None
    metrics: MetricsServer | None = None
    reader: LogReader | None = None
    cgroups: MemcgOomEvents | None = None
    try:
        store = open_store(url)
        host: HostInfo = host_info(env.proc_root)
        reader = _log_reader(args, env, log)
        from oomlens.system.memcg import find_memcg_mount

        mount = find_memcg_mount(env.proc_root)
        cgroups, rescan = _cgroups(args, mount, log)
        if args.metrics:
            from oomlens.metrics import serve_metrics

            def part_changed(part: str, why: str | None) -> None:
                log({"event": "metrics", "part": part,
                     "message": "working again" if why is None else f"failing: {why}"})

            metrics = serve_metrics(args.metrics, url, env.proc_root, report=part_changed)
            log({"event": "metrics", "message": f"serving {metrics.url}"})

        def emit(stored: StoredEvent, live: bool) -> None:
            if as_json:
                env.stdout.write(json.dumps({"schema": "oomlens.event/1", "live": live,
                                             **record_json(stored)}) + "\n")
            else:
                env.stdout.write(describe(stored) + ("" if live else "  (backfilled)") + "\n")
            env.stdout.flush()
            if live and notifier is not None:
                notifier.submit(record_json(stored))

        watcher = Watcher(store, host, clock=time.time, emit=emit, log=log,
                          victim_cgroup=None if mount is None else
                          victim_cgroup_reader(env.proc_root, mount.version))
        problem = protect_self(env.proc_root)
        if problem is not None:
            log({"event": "unprotected", "message": f"oom_score_adj not lowered: {problem}"})

        def ready() -> None:
            log({"event": "started", "store": watcher.store.display,
                 "log": "none" if reader is None else reader.source,
                 "cgroups": 0 if cgroups is None else len(cgroups.paths()),
                 "backfilled": watcher.stored, "message": ""})

        serve(watcher, WatchOptions(env.proc_root, not args.no_backfill, args.once,
                                    not args.cgroup, mount is not None and mount.version == 2),
              reader, cgroups, time.monotonic, ready, lambda: open_store(url), rescan)
        log({"event": "stopped", "stored": watcher.stored, "lost_kills": watcher.lost_kills,
             "message": ""})
    finally:
        if metrics is not None:
            metrics.close()
        if notifier is not None:
            notifier.close()
        if watcher is not None:  # SIGHUP may have replaced the store
            store = watcher.store
        for resource in (cgroups, reader, store):
            if resource is not None:
                resource.close()
    return ExitStatus.OK
