"""One report line's fields: the patterns of the lines the kernel prints in an
OOM report (cited in `report/parser.py`) and the functions that copy a matched
line's values into the event. No state: which event a line belongs to is the
parser's business."""

from __future__ import annotations

import re

from oomlens.report.model import BuddyLine, MemcgReport, OomEvent, TaskRow, Victim, Zone

HEADER = re.compile(r"^(?P<comm>.*?) invoked oom-killer: (?P<fields>.*)$")
GFP = re.compile(r"gfp_mask=(?P<mask>0x[0-9a-fA-F]+)(?:\((?P<flags>[^)]*)\))?")
# 4.8-4.18 print the allocation's nodemask in the header ("nodemask=1,").
HEADER_NODEMASK = re.compile(r"\bnodemask=(?P<nodemask>[^,\s]*)")
HEADER_INT = re.compile(r"\b(order|oom_score_adj|oom_adj|oomkilladj)=(-?\d+)")
CPUSET = re.compile(r"^(?P<comm>.*) cpuset=(?P<cpuset>\S+) mems_allowed=(?P<mems>\S*)$")
# "Tainted: G           OE      6.1.1-arch1-1 #1": taint letters and blanks, then
# the release, which starts with a digit.
TAINT_VERSION = r"(?:Not tainted|Tainted:[A-Z ]*?)\s*(?P<version>\d[^\s]*)"
CPU_LINE = re.compile(
    r"^CPU: (?P<cpu>\d+) (?:UID: (?P<uid>\d+) )?PID: (?P<pid>\d+) Comm: (?P<comm>.*?) "
    + TAINT_VERSION
)
PID_LINE = re.compile(r"^Pid: (?P<pid>\d+), comm: (?P<comm>.*?) " + TAINT_VERSION)
PID_LINE_SHORT = re.compile(r"^Pid: (?P<pid>\d+), comm: (?P<comm>.*?)$")

KEY_PAGES = re.compile(r"([A-Za-z_()]+):(\d+)(?![\dkKmM])")
# Kernels without NUMA (32-bit ones especially) print zones without "Node N ".
ZONE = re.compile(r"^(?:Node (?P<node>\d+) )?(?P<zone>\w+) free:(?P<free>\d+)kB")
ZONE_FIELD = re.compile(r"\b(min|high|present):(\d+)kB")
BUDDY = re.compile(
    r"^(?:Node (?P<node>\d+) )?(?P<zone>\w+): (?P<blocks>.*?) = \d+kB$"
)
ZONE_NAMES = ("DMA", "DMA32", "Normal", "HighMem", "Movable", "Device")
BLOCK = re.compile(r"(\d+)\*(\d+)kB")
HUGEPAGES = re.compile(
    r"^Node (\d+) hugepages_total=(\d+) hugepages_free=(\d+) hugepages_surp=\d+ "
    r"hugepages_size=(\d+)kB"
)
# 2.6.x says "N pages of RAM", "N reserved pages" (the words: PAGES_FIELDS below).
PAGES_LINE = re.compile(
    r"^(?P<n>\d+) (?P<what>pages RAM|pages of RAM|pages HighMem/MovableOnly|pages reserved|"
    r"reserved pages|pages cma reserved|total pagecache pages|pages in swap cache)$"
)
SWAP_LINE = re.compile(r"^(?P<what>Free swap|Total swap)\s*=\s*(?P<kb>\d+)kB$")
SLAB_ROW = re.compile(r"^(?P<name>\S+)\s+(?P<used>\d+)KB\s+(?P<total>\d+)KB$")

TASK_IN = re.compile(r"^Task in (?P<task>.*) killed as a result of limit of (?P<oom>.*)$")
COUNTER = re.compile(
    r"^(?P<name>memory|memory\+swap|swap|kmem): usage (?P<usage>\d+)kB, "
    r"limit (?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)"
)
STATS_FOR = re.compile(r"^Memory cgroup stats for (?P<path>.*?):(?P<inline> .*)?$")
STAT_ONELINE = re.compile(r"(\w+):(\d+)KB")
STAT_LINE = re.compile(r"^(?P<key>[a-z_]\w*) (?P<value>\d+)$")

TASK_HEADER = re.compile(r"^\[\s*pid\s*\]\s+(?P<columns>.*\bname)$")
TASK_ROW = re.compile(r"^\[\s*(?P<pid>\d+)\]\s+(?P<rest>.*)$")

OOM_KILL = re.compile(
    r"^oom-kill:constraint=(?P<constraint>[^,]*),(?P<fields>.*?),?task=(?P<task>.*),"
    r"pid=(?P<pid>\d+),uid=(?P<uid>\d+)$"
)
SELECT = re.compile(
    r"^(?:(?P<message>.*?): )?[Kk]ill process (?P<pid>\d+) \((?P<comm>.*)\) "
    r"score (?P<score>-?\d+) or (?:sacrifice child|a child)"
)
KILLED = re.compile(
    r"^(?:(?P<message>.*?): )?Killed process (?P<pid>\d+)(?:, UID (?P<uid_rhel6>\d+),)? "
    r"\((?P<comm>.*)\)(?P<rest>(?:,? (?:UID \d+, )?total-vm:.*)?)\.?$"
)
KILLED_KB = re.compile(r"\b(total-vm|anon-rss|file-rss|shmem-rss|pgtables):(\d+)kB")
KILLED_UID = re.compile(r"\bUID[: ](\d+)")
KILLED_ADJ = re.compile(r"\boom_score_adj:(-?\d+)")
REAPED = re.compile(
    r"^oom_reaper: reaped process (?P<pid>\d+) \((?P<comm>.*)\), now anon-rss:(?P<anon>\d+)kB"
)
OOM_GROUP = re.compile(r"^Tasks in (?P<path>.*) are going to be killed due to memory\.oom\.group")
NO_KILLABLE = "Out of memory and no killable processes"
PANIC = re.compile(r"^Kernel panic - not syncing: (?P<text>.*)$")


def take_header(event: OomEvent, match: re.Match[str]) -> None:
    event.has_header = True
    trigger = event.trigger
    trigger.comm = match.group("comm")
    fields = match.group("fields")
    if gfp := GFP.search(fields):
        trigger.gfp_mask = gfp.group("mask")
        trigger.gfp_flags = gfp.group("flags")
    if nodemask := HEADER_NODEMASK.search(fields):
        trigger.nodemask = nodemask.group("nodemask")
    for key, value in HEADER_INT.findall(fields):
        if key == "order":
            trigger.order = int(value)
        elif key == "oom_score_adj":
            trigger.oom_score_adj = int(value)
        else:  # oom_adj (2.6.32-3.x), oomkilladj (2.6.18)
            trigger.oom_adj = int(value)


def task_row(columns: tuple[str, ...], pid: int, rest: str) -> TaskRow | None:
    """dump_task(): the numeric columns of the header in order, then the name (which
    may contain spaces, so it is whatever follows the last number)."""
    numeric = columns[:-1]
    parts = rest.split(None, len(numeric) - 1 if numeric else 0)
    if len(parts) != len(numeric):
        return None
    *numbers, last = parts
    last_value, _, name = last.partition(" ")
    values: dict[str, int] = {}
    try:
        for column, value in zip(numeric, [*numbers, last_value], strict=True):
            values[column] = int(value)
    except ValueError:
        return None
    name = name.strip()
    return TaskRow(
        pid=pid,
        uid=values.get("uid"),
        tgid=values.get("tgid"),
        total_vm=values.get("total_vm"),
        rss=values.get("rss"),
        name=name,
        rss_anon=values.get("rss_anon"),
        rss_file=values.get("rss_file"),
        rss_shmem=values.get("rss_shmem"),
        nr_ptes=values.get("nr_ptes"),
        nr_pmds=values.get("nr_pmds"),
        pgtables_bytes=values.get("pgtables_bytes"),
        swapents=values.get("swapents"),
        oom_score_adj=values.get("oom_score_adj"),
        oom_adj=values.get("oom_adj"),
        cpu=values.get("cpu"),
    )


def take_node_line(event: OomEvent, text: str) -> bool:
    memory = event.memory
    if (zone := ZONE.match(text)) is not None:
        fields = dict(ZONE_FIELD.findall(text))
        memory.zones.append(
            Zone(
                node=int(zone.group("node") or 0),
                name=zone.group("zone"),
                free_kb=int(zone.group("free")),
                min_kb=opt_int(fields.get("min")),
                high_kb=opt_int(fields.get("high")),
                present_kb=opt_int(fields.get("present")),
            )
        )
        return True
    if (buddy := BUDDY.match(text)) is not None:
        blocks = tuple((int(n), int(kb)) for n, kb in BLOCK.findall(buddy.group("blocks")))
        memory.buddy.append(
            BuddyLine(int(buddy.group("node") or 0), buddy.group("zone"), blocks)
        )
        if blocks:
            smallest = min(kb for _, kb in blocks)
            if memory.page_size_kb is None or smallest < memory.page_size_kb:
                memory.page_size_kb = smallest
        return True
    if (huge := HUGEPAGES.match(text)) is not None:
        node, total, free, size = (int(huge.group(i)) for i in range(1, 5))
        memory.hugepages.append((node, total, free, size))
        return True
    return False


# "N <what>" lines of show_mem() -> the MemoryReport field they set.
PAGES_FIELDS = {
    "pages RAM": "ram_pages", "pages of RAM": "ram_pages",
    "pages HighMem/MovableOnly": "highmem_pages",
    "pages reserved": "reserved_pages", "reserved pages": "reserved_pages",
    "pages cma reserved": "cma_reserved_pages",
    "total pagecache pages": "pagecache_pages", "pages in swap cache": "swapcache_pages",
}  # fmt: skip


def take_pages_line(event: OomEvent, what: str, count: int) -> None:
    setattr(event.memory, PAGES_FIELDS[what], count)


def take_summary(event: OomEvent, match: re.Match[str]) -> None:
    """dump_oom_summary(): "oom-kill:constraint=C,nodemask=..,cpuset=..,
    mems_allowed=..,global_oom|oom_memcg=..,task_memcg=..,task=..,pid=..,uid=..".
    A mems_allowed list ("0-1,3") contains commas: a piece without "=" belongs to
    the value before it."""
    event.constraint = match.group("constraint")
    fields: dict[str, str] = {"constraint": event.constraint}
    last_key: str | None = None
    for piece in match.group("fields").split(","):
        key, sep, value = piece.partition("=")
        if sep:
            fields[key] = value
            last_key = key
        elif piece == "global_oom":
            fields[piece] = ""
            last_key = None
        elif last_key is not None:
            fields[last_key] += "," + piece
    fields.update(task=match.group("task"), pid=match.group("pid"), uid=match.group("uid"))
    event.oom_kill_fields = fields
    if event.cpuset is None and "cpuset" in fields:
        event.cpuset = fields["cpuset"]
    if event.mems_allowed is None and "mems_allowed" in fields:
        event.mems_allowed = fields["mems_allowed"]
    if "oom_memcg" in fields or "task_memcg" in fields:
        memcg_fields_ok = "oom_memcg" in fields
        if memcg_fields_ok and event.memcg is None:
            event.memcg = MemcgReport()
        if event.memcg is not None:
            if event.memcg.oom_memcg is None and "oom_memcg" in fields:
                event.memcg.oom_memcg = fields["oom_memcg"]
            if event.memcg.task_memcg is None and "task_memcg" in fields:
                event.memcg.task_memcg = fields["task_memcg"]


def victim_from(match: re.Match[str]) -> Victim:
    rest = match.group("rest") or ""
    sizes = dict(KILLED_KB.findall(rest))
    uid = match.group("uid_rhel6")
    if uid is None and (found := KILLED_UID.search(rest)) is not None:
        uid = found.group(1)
    adj = KILLED_ADJ.search(rest)
    return Victim(
        pid=int(match.group("pid")),
        comm=match.group("comm"),
        total_vm_kb=opt_int(sizes.get("total-vm")),
        anon_rss_kb=opt_int(sizes.get("anon-rss")),
        file_rss_kb=opt_int(sizes.get("file-rss")),
        shmem_rss_kb=opt_int(sizes.get("shmem-rss")),
        uid=opt_int(uid),
        pgtables_kb=opt_int(sizes.get("pgtables")),
        oom_score_adj=None if adj is None else int(adj.group(1)),
    )


def take_task_line(event: OomEvent, match: re.Match[str]) -> None:
    """The dump_stack() identification line: the trigger's pid and the kernel."""
    trigger = event.trigger
    if trigger.pid is None:
        trigger.pid = int(match.group("pid"))
    if trigger.comm is None:
        trigger.comm = match.group("comm")
    version = match.groupdict().get("version")
    if version and event.kernel_version is None:
        event.kernel_version = version


def opt_int(value: str | None) -> int | None:
    return None if value is None else int(value)
