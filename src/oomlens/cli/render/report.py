"""An analysed OOM report in full, as `report --details` and `simulate` print it."""

from __future__ import annotations

from oomlens.cli.env import Env
from oomlens.cli.render.table import Column, paint, render_table
from oomlens.postmortem import Analysed
from oomlens.report.facts import missing_parts, scope, victim_kb
from oomlens.report.schema import event_id
from oomlens.units import format_bytes

SEVERITY_STYLE = {"critical": "red", "warning": "yellow", "info": ""}
BREAKDOWN_LABELS = {
    "user_anon": "user anon", "page_cache": "page cache", "shmem": "shmem/tmpfs",
    "unevictable": "unevictable", "slab_unreclaimable": "slab (unreclaimable)",
    "slab_reclaimable": "slab (reclaimable)", "page_tables": "page tables",
    "hugepages_reserved": "hugepages reserved", "kernel_stack": "kernel stacks",
    "sock": "socket buffers", "kernel": "kernel (kmem)", "free": "free",
    "unaccounted": "unaccounted",
}  # fmt: skip


def event_time(item: Analysed) -> str:
    event = item.event
    if event.wallclock is not None:
        return event.wallclock.strftime("%Y-%m-%d %H:%M:%S")
    if event.monotonic is not None:
        return f"boot+{event.monotonic:.3f}s"
    return f"{event.source.rsplit('/', 1)[-1]}:{event.first_lineno}"


def event_details(item: Analysed, env: Env) -> list[str]:
    event, diagnosis = item.event, item.diagnosis
    out = [paint(f"== {event_id(event)}  {event_time(item)}", "bold", env.colour)]
    missing = missing_parts(event)
    if missing:
        out.append(f"Incomplete: missing {', '.join(missing)}")
    trigger = event.trigger
    out.append(
        f"Kernel {event.kernel_version or '?'}, scope {scope(event)}"
        + (f" ({event.constraint})" if event.constraint else "")
    )
    if event.has_header:
        out.append(
            f"Trigger: {trigger.comm} (pid {trigger.pid or '?'}) gfp_mask={trigger.gfp_mask}"
            + (f"({trigger.gfp_flags})" if trigger.gfp_flags else "")
            + f" order={trigger.order} oom_score_adj={trigger.oom_score_adj}"
        )
    victim = event.victim
    if victim is not None:
        freed = victim_kb(event)
        out.append(
            f"Victim: {victim.comm} (pid {victim.pid}) freed "
            f"{format_bytes(None if freed is None else freed * 1024)}"
            + ("" if victim.oom_score_adj is None else f", oom_score_adj {victim.oom_score_adj}")
            + (", reaped" if victim.reaped else "")
        )
    if event.memcg is not None and event.memcg.memory is not None:
        memory = event.memcg.memory
        out.append(f"Cgroup {event.memcg.oom_memcg or event.memcg.stats_path}: usage "
                   f"{format_bytes(memory.usage_kb * 1024)} of limit "
                   f"{format_bytes(memory.limit_kb * 1024)}, failcnt {memory.failcnt}")
    out += _breakdown(item)
    out += _consumers(item)
    if diagnosis.choice_checks_out is not None:
        verdict = "checks out" if diagnosis.choice_checks_out else (
            f"does NOT check out (oomlens ranks pid {diagnosis.predicted_pid} first)")
        out.append(f"The kernel's choice, recomputed with the {diagnosis.era} rules and "
                   f"totalpages {diagnosis.totalpages}: {verdict}.")
    for finding in diagnosis.findings:
        style = SEVERITY_STYLE.get(finding.severity, "")
        out.append(paint(f"[{finding.severity}] {finding.code}: {finding.message}", style,
                         env.colour))
        if finding.fix:
            out.append(f"    fix: {finding.fix}")
    return out


def _breakdown(item: Analysed) -> list[str]:
    breakdown, total = item.diagnosis.breakdown, item.diagnosis.domain_kb
    if not breakdown or not total:
        return []
    rows = [
        [BREAKDOWN_LABELS.get(key, key), format_bytes(kb * 1024), f"{kb * 100 / total:.1f}%"]
        for key, kb in sorted(breakdown.items(), key=lambda kv: -kv[1]) if kb
    ]
    return ["Where the memory was:",
            *("  " + line for line in render_table(
                (Column("WHAT", "<"), Column("SIZE"), Column("SHARE")), rows))]


def _consumers(item: Analysed) -> list[str]:
    diagnosis = item.diagnosis
    if not diagnosis.top_processes:
        return []
    rows = []
    for consumer in diagnosis.top_groups[:5]:
        count = len(consumer.pids)
        label = f"{count} × {consumer.name}" if count > 1 else (
            f"{consumer.name} ({consumer.pids[0]})")
        share = "-" if consumer.share is None else f"{consumer.share * 100:.1f}%"
        rows.append([label, format_bytes(consumer.rss_kb * 1024),
                     format_bytes(consumer.swap_kb * 1024), share])
    return ["Top consumers (task table):",
            *("  " + line for line in render_table(
                (Column("PROCESSES", "<"), Column("RSS"), Column("SWAP"), Column("SHARE")),
                rows))]
