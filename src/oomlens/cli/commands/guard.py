"""`oomlens guard`: check the thresholds, set up the domains, wake-ups, policy, store
and notifications, print the decisions; daemons/guard.py decides and kills."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.render.eventlog import event_log
from oomlens.daemons.guard import (
    Domain,
    Guard,
    GuardOptions,
    MemcgProbe,
    Probe,
    SystemProbe,
    Waker,
    lock_memory,
    serve,
)
from oomlens.errors import OomlensError, UsageError
from oomlens.guard.triggers import (
    DEFAULT_FLOOR,
    Assessor,
    Thresholds,
    parse_amount,
    validate,
)
from oomlens.guard.victim import Preferences, parse_patterns
from oomlens.units import format_bytes

if TYPE_CHECKING:
    from oomlens.notify import Notifier
    from oomlens.policy.rules import Policy
    from oomlens.store.db import Store
    from oomlens.store.record import EventRecord

SCHEMA = "oomlens.guard/1"
DEFAULT_POLICY = "/etc/oomlens/policy.toml"
# A PSI trigger that wakes the loop: 100 ms of stall within 2 s (2 s: the smallest
# window an unprivileged trigger may use, kernel/sched/psi.c: psi_trigger_create()).
_PSI_STALL_US, _PSI_WINDOW_US = 100_000, 2_000_000
Log = Any


def describe(entry: dict[str, Any]) -> str:
    event = entry["event"]
    if event == "kill":
        dry = " (dry run: no signal sent)" if entry["dry_run"] else ""
        why = "".join(f"\n    {line}" for line in entry.get("why", ()))
        return (f"kill{dry}: {entry['comm']} ({entry['pid']}) in {entry['domain']}, "
                f"{format_bytes(entry['rss_bytes'])} resident; "
                + "; ".join(entry["reasons"]) + why)
    if event in ("warn", "kill_level", "ok"):
        return (f"{event}: {entry['domain']} has {format_bytes(entry['available_bytes'])} of "
                f"{format_bytes(entry['total_bytes'])} available"
                + ("; " + "; ".join(entry["reasons"]) if entry["reasons"] else ""))
    if event == "nothing_to_kill":
        return f"ALERT: nothing acceptable to kill in {entry['domain']}: " + "; ".join(
            entry["why"][-1:])
    details = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("event", "message"))
    return f"{event}: {entry.get('message', '')} {details}".rstrip()


def thresholds_of(args: argparse.Namespace) -> Thresholds:
    def amount(text: str | None, what: str) -> Any:
        return None if text is None else parse_amount(text, what)

    return Thresholds(
        kill_below=parse_amount(args.kill_below, "--kill-below"),
        warn_below=amount(args.warn_below, "--warn-below"),
        swap_kill_below=amount(args.swap_kill_below, "--swap-kill-below"),
        swap_warn_below=amount(args.swap_warn_below, "--swap-warn-below"),
        psi_full_avg10=args.psi_full, psi_some_avg10=args.psi_some,
        predict_seconds=args.predict)


def _policy(args: argparse.Namespace) -> Policy | None:
    from oomlens.policy.load import load_policy

    if args.policy is not None:
        return load_policy(args.policy)
    return load_policy(DEFAULT_POLICY) if os.path.exists(DEFAULT_POLICY) else None


def _probes(args: argparse.Namespace, env: Env, thresholds: Thresholds) -> list[Probe]:
    if args.no_system and not args.cgroup:
        raise UsageError("--no-system needs at least one --cgroup to guard")
    probes: list[Probe] = []
    with_psi = thresholds.uses_pressure
    if not args.no_system:
        probes.append(SystemProbe(env.proc_root, with_psi))
    if args.cgroup:
        from oomlens.system.memcg import find_memcg_mount

        mount = find_memcg_mount(env.proc_root)
        if mount is None:
            raise UsageError("--cgroup: this system has no memory cgroup controller")
        probes += [MemcgProbe(mount, "/" + path.strip("/"), with_psi) for path in args.cgroup]
    return probes


def _wakers(probes: list[Probe], thresholds: Thresholds, env: Env, log: Log) -> list[Waker]:
    """Event-driven wake-ups where the kernel offers them; polling covers the rest
    (said once)."""
    import select

    from oomlens.system.psitrigger import open_trigger

    wakers: list[Waker] = []
    for probe in probes:
        if isinstance(probe, MemcgProbe) and probe.mount.version == 1:
            from oomlens.system.memthreshold import UsageThreshold

            limit = probe.limit_bytes() or 0
            level = limit - thresholds.kill_below.resolve(limit)
            threshold = UsageThreshold(probe.directory, level)
            wakers.append(Waker(threshold, select.POLLIN, threshold.drain))
            continue
        # The system's PSI, or a v2 cgroup's own (v2 has no usage threshold event).
        pressure = (os.path.join(probe.directory, "memory.pressure")
                    if isinstance(probe, MemcgProbe) else f"{env.proc_root}/pressure/memory")
        trigger, why = open_trigger(pressure, "some", _PSI_STALL_US, _PSI_WINDOW_US)
        if trigger is not None:
            wakers.append(Waker(trigger, select.POLLPRI))
        if isinstance(probe, MemcgProbe):
            why = ("cgroup v2 offers no usage threshold event: polling as headroom requires"
                   + (f"; {why}" if why else ", and woken by its memory.pressure trigger"))
        if why is not None:
            log({"event": "wakeup", "domain": probe.name, "message": why})
    if thresholds.uses_pressure and any(
            isinstance(p, MemcgProbe) and p.mount.version == 1 for p in probes):
        log({"event": "note", "message": "cgroup v1 has no per-cgroup pressure: --psi-full "
             "and --psi-some apply to the system domain only"})
    return wakers


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    as_json = getattr(args, "json", False)
    log = event_log(env.stdout, SCHEMA, describe, as_json, time_key="at")
    thresholds = thresholds_of(args)
    if args.max_interval < DEFAULT_FLOOR:
        raise UsageError(f"--max-interval: {args.max_interval:g} s is below the shortest "
                         f"sleep, {DEFAULT_FLOOR:g} s")
    prefs = Preferences(parse_patterns(args.avoid, "--avoid"),
                        parse_patterns(args.prefer, "--prefer"), os.getpid(),
                        frozenset({os.getppid(), os.getsid(0)}) if args.ignore_session
                        else frozenset())
    policy = _policy(args)
    if args.store:  # a wrong URL fails now, not at the first kill
        from oomlens.store.urls import parse_url

        parse_url(args.store)
    probes = _probes(args, env, thresholds)
    stores: list[Store] = []  # opened at the first kill (sqlite3 costs 2.6 MB resident)
    notifier: Notifier | None = None
    wakers: list[Waker] = []
    try:
        domains = []
        for probe in probes:
            sample = probe.sample(0.0)
            notes = validate(thresholds, sample.total_bytes, sample.swap_total_bytes or 0)
            for note in notes if isinstance(probe, SystemProbe) else ():  # swap: system only
                log({"event": "note", "domain": probe.name, "message": note})
            name = "MemAvailable" if isinstance(probe, SystemProbe) else "available memory"
            domains.append(Domain(probe, thresholds, Assessor(thresholds, available_name=name)))
        wakers += _wakers(probes, thresholds, env, log)
        if not args.dry_run:
            from oomlens.cli.notifying import notifier_of


            notifier = notifier_of(args, env.proc_root, log)
        guard = Guard(domains, prefs, policy,
                      GuardOptions(env.proc_root, args.dry_run, args.explain, args.grace,
                                   args.kill_interval, args.kill_group, args.before_kill,
                                   args.hook_timeout, ceiling=args.max_interval),
                      log, _recorder(lambda: _open_store(args, env, log), stores, notifier, log))
        for problem in (_protect_self(env), lock_memory()):
            if problem is not None:
                log({"event": "self", "message": problem})
        guard.warm_up()

        def reload() -> None:
            try:
                guard.policy = _policy(args)
                log({"event": "reloaded", "message": "policy reloaded"})
            except OomlensError as err:
                log({"event": "reload_failed", "message": f"{err}; keeping the policy"})

        serve(guard, wakers, lambda: log({
            "event": "started", "domains": [d.probe.name for d in domains],
            "message": f"kill below {args.kill_below}, warn below {args.warn_below}"
            + (" (dry run)" if args.dry_run else "")}), reload)
        counters = guard.counters
        log({"event": "stopped", "looks": counters.looks, "kills": counters.kills,
             "warnings": counters.warnings, "message": ""})
    finally:
        if notifier is not None:
            notifier.close()
        for store in stores:
            store.close()
        for closable in (*wakers, *probes):
            closable.close()
    return ExitStatus.OK


def _protect_self(env: Env) -> str | None:
    from oomlens.daemons.selfcare import protect_self

    problem = protect_self(env.proc_root)
    return None if problem is None else f"oom_score_adj not lowered: {problem}"


def _open_store(args: argparse.Namespace, env: Env, log: Log) -> Store | None:
    """The history store for the kills (kind guard); without one the guard still
    guards, and says so once."""
    from oomlens.store.db import default_store_url, open_store

    try:
        return open_store(args.store or default_store_url(args.state_dir or env.state_dir))
    except OomlensError as err:
        log({"event": "no_store", "message": f"kills are not recorded: {err}"})
        return None


def _recorder(open_store: Callable[[], Store | None], opened: list[Store],
              notifier: Notifier | None, log: Log) -> Callable[[EventRecord], None]:
    """Store each kill (the store is opened at the first, after the memory came
    back) and notify."""
    from oomlens.store.record import StoredEvent, record_json

    tried = False

    def record(event: EventRecord) -> None:
        import time

        nonlocal tried
        if not tried:
            tried = True
            store = open_store()
            if store is not None:
                opened.append(store)
        now = time.time()
        stored = StoredEvent(0, event, now)  # id 0: not stored
        for store in opened:
            try:
                stored = store.add(event, now=now) or stored
            except OomlensError as err:
                log({"event": "store_failed", "message": str(err)})
        if notifier is not None:
            notifier.submit(record_json(stored))
    return record
