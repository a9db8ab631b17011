"""`oomlens ls`: processes in the order the kernel would kill them."""

from __future__ import annotations

import argparse
import re
from typing import Any

from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.render.json import write_json
from oomlens.cli.render.table import render_table
from oomlens.cli.views import PROCESS_COLUMNS, process_json, process_row, row_style, select_rows
from oomlens.errors import UsageError
from oomlens.kernel.domain import OomDomain
from oomlens.ranking import RankedProcess, all_domains, find_domain, rank_domain
from oomlens.system.snapshot import Snapshot, take_snapshot
from oomlens.units import format_bytes


def compile_match(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise UsageError(f"--match: not a valid regular expression: {err}") from None


def filtered(args: argparse.Namespace, items: list[RankedProcess]) -> list[RankedProcess]:
    return select_rows(
        items, show_kthreads=args.all, user=args.user, match=compile_match(args.match),
        eligible_only=args.eligible, sort=args.sort, limit=args.limit,
    )


def domain_heading(snapshot: Snapshot, domain: OomDomain) -> str:
    size = format_bytes(domain.totalpages * snapshot.page_size)
    return f"{domain.label}: totalpages {domain.totalpages} ({size}), 1 adj = " \
           f"{domain.totalpages // 1000} pages"


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    snapshot = take_snapshot(env.proc_root)
    domains = all_domains(snapshot) if args.all_domains else [find_domain(snapshot, args.cgroup)]
    ranked = [(d, filtered(args, rank_domain(snapshot, d))) for d in domains]
    if getattr(args, "json", False):
        document: Any
        if args.all_domains:
            document = [
                {"domain": d.label, "kind": str(d.kind), "path": d.path,
                 "totalpages": d.totalpages, "processes": [process_json(r) for r in rows]}
                for d, rows in ranked
            ]
        else:
            document = [process_json(r) for r in ranked[0][1]]
        write_json(env.stdout, document)
        return ExitStatus.OK
    for n, (domain, rows) in enumerate(ranked):
        if n or args.all_domains:
            env.stdout.write(("\n" if n else "") + domain_heading(snapshot, domain) + "\n")
        lines = render_table(
            PROCESS_COLUMNS, [process_row(r) for r in rows],
            width=env.columns if env.stdout_isatty else None,
            styles=[row_style(r) for r in rows], colour=env.colour,
        )
        env.stdout.write("\n".join(lines) + "\n")
    _write_notes(env, snapshot)
    return ExitStatus.OK


def _write_notes(env: Env, snapshot: Snapshot) -> None:
    denied = snapshot.notes.denied
    if denied:
        what = ", ".join(f"{name} of {count} processes" for name, count in sorted(denied.items()))
        env.stderr.write(f"oomlens: note: could not read {what} (run as root to see all)\n")
