"""`oomlens top`: the kill order, live. Plain curses (works over SSH in any terminal);
only the visible rows are rendered, so thousands of processes stay responsive.

Keys: q quit, j/k or arrows move, PgUp/PgDn page, Enter explain the selected process
(any key returns), s cycle sort, d cycle OOM domain, / filter (regex, empty clears),
+/- interval, space refresh now, ? help.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oomlens.cli.argtypes import SORT_KEYS
from oomlens.cli.commands.explain import explanation_lines
from oomlens.cli.commands.ls import compile_match
from oomlens.cli.env import Env, ExitStatus
from oomlens.cli.render.table import render_table
from oomlens.cli.views import PROCESS_COLUMNS, process_row, select_rows
from oomlens.errors import OomlensError
from oomlens.ranking import RankedProcess, all_domains, find_domain, rank_domain
from oomlens.system.snapshot import Snapshot, take_snapshot
from oomlens.units import format_bytes

if TYPE_CHECKING:
    import curses

HELP = __doc__.split("Keys:", 1)[1].strip() if __doc__ else ""
HEADER_LINES = 3


@dataclass
class TopState:
    """What the user chose; everything on screen derives from it and a snapshot."""

    sort: str = "rank"
    match: re.Pattern[str] | None = None
    domain_path: str = "/"
    selected: int = 0
    offset: int = 0
    interval: float = 2.0
    explain_pid: int | None = None
    message: str = ""
    show_kthreads: bool = False
    user: str | None = None
    eligible_only: bool = False
    rows: list[RankedProcess] = field(default_factory=list)


def compute_rows(snapshot: Snapshot, state: TopState) -> list[RankedProcess]:
    domain = find_domain(snapshot, state.domain_path)
    return select_rows(rank_domain(snapshot, domain), show_kthreads=state.show_kthreads,
                       user=state.user, match=state.match, eligible_only=state.eligible_only,
                       sort=state.sort)


def screen_lines(snapshot: Snapshot, state: TopState, width: int, height: int) -> list[str]:
    """The whole screen as text: header, then the visible window of the ranking."""
    if state.explain_pid is not None:
        try:
            body = explanation_lines(snapshot, state.explain_pid)
        except OomlensError as err:
            body = [str(err)]
        return [line[:width] for line in [*body, "", "(any key returns)"]][:height]
    mem = snapshot.meminfo
    domain = find_domain(snapshot, state.domain_path)
    psi = snapshot.pressure
    pressure = "-" if psi is None else f"{psi.some.avg10:.2f}%"
    header = [
        f"oomlens top — {time.strftime('%H:%M:%S')}  available "
        f"{format_bytes(mem.mem_available_kib * 1024)} of {format_bytes(mem.mem_total_kib * 1024)}"
        f"  psi some avg10 {pressure}",
        f"domain {domain.label} ({format_bytes(domain.totalpages * snapshot.page_size)})  "
        f"sort {state.sort}  filter {state.match.pattern if state.match else '-'}  "
        f"{len(state.rows)} processes  every {state.interval:g}s",
        state.message or "q quit  Enter explain  s sort  d domain  / filter  ? help",
    ]
    visible = max(height - HEADER_LINES - 1, 1)
    window = state.rows[state.offset : state.offset + visible]
    table = render_table(PROCESS_COLUMNS, [process_row(r) for r in window], width=width)
    return [line[:width] for line in header + table]


def _move(state: TopState, delta: int, visible: int) -> None:
    if not state.rows:
        state.selected = state.offset = 0
        return
    state.selected = min(max(state.selected + delta, 0), len(state.rows) - 1)
    if state.selected < state.offset:
        state.offset = state.selected
    elif state.selected >= state.offset + visible:
        state.offset = state.selected - visible + 1


def _cycle_domain(snapshot: Snapshot, state: TopState) -> None:
    paths = [d.path for d in all_domains(snapshot)]
    index = paths.index(state.domain_path) if state.domain_path in paths else -1
    state.domain_path = paths[(index + 1) % len(paths)]
    state.selected = state.offset = 0


def handle_key(key: str, snapshot: Snapshot, state: TopState, visible: int) -> bool:
    """Apply one key press; False means quit."""
    state.message = ""
    if state.explain_pid is not None:
        state.explain_pid = None
        return True
    moves = {"KEY_DOWN": 1, "j": 1, "KEY_UP": -1, "k": -1, "KEY_NPAGE": visible,
             "KEY_PPAGE": -visible, "KEY_HOME": -len(state.rows), "KEY_END": len(state.rows)}
    if key in ("q", "Q"):
        return False
    if key in moves:
        _move(state, moves[key], visible)
    elif key in ("\n", "KEY_ENTER") and state.rows:
        state.explain_pid = state.rows[state.selected].process.pid
    elif key == "s":
        state.sort = SORT_KEYS[(SORT_KEYS.index(state.sort) + 1) % len(SORT_KEYS)]
    elif key == "d":
        _cycle_domain(snapshot, state)
    elif key == "+":
        state.interval = min(state.interval * 2, 60.0)
    elif key == "-":
        state.interval = max(state.interval / 2, 0.25)
    elif key == "?":
        state.message = HELP.replace("\n", " ")
    return True


def run(args: argparse.Namespace, env: Env) -> ExitStatus:
    state = TopState(sort=args.sort, match=compile_match(args.match), interval=args.interval,
                     domain_path=args.cgroup or "/", show_kthreads=args.all, user=args.user,
                     eligible_only=args.eligible)
    snapshot = take_snapshot(env.proc_root)
    state.rows = compute_rows(snapshot, state)
    if args.once or not env.stdout_isatty:
        height = 10**9 if not env.stdout_isatty else 50
        lines = screen_lines(snapshot, state, env.columns, height)
        env.stdout.write("\n".join(lines) + "\n")
        return ExitStatus.OK
    import curses

    curses.wrapper(lambda screen: _loop(screen, env, state, snapshot))
    return ExitStatus.OK


def _loop(screen: curses.window, env: Env, state: TopState, snapshot: Snapshot) -> None:
    import curses

    curses.curs_set(0)
    next_refresh = time.monotonic() + state.interval
    while True:
        height, width = screen.getmaxyx()
        _draw(screen, screen_lines(snapshot, state, width - 1, height), state, width)
        screen.timeout(max(int((next_refresh - time.monotonic()) * 1000), 0))
        try:
            key = screen.getkey()
        except curses.error:  # timeout: nothing pressed
            key = ""
        if key == "/":
            state.match = _prompt_filter(screen, height)
            state.selected = state.offset = 0
        elif key and key != " " and not handle_key(key, snapshot, state,
                                                   height - HEADER_LINES - 1):
            return
        if not key or key == " " or time.monotonic() >= next_refresh:
            snapshot = take_snapshot(env.proc_root)
            next_refresh = time.monotonic() + state.interval
        state.rows = compute_rows(snapshot, state)
        _move(state, 0, height - HEADER_LINES - 1)


def _draw(screen: curses.window, lines: list[str], state: TopState, width: int) -> None:
    import curses

    screen.erase()
    selected_line = HEADER_LINES + 1 + state.selected - state.offset
    for y, line in enumerate(lines):
        attr = curses.A_REVERSE if state.explain_pid is None and y == selected_line else 0
        if y == HEADER_LINES:
            attr = curses.A_BOLD
        try:
            screen.addnstr(y, 0, line, width - 1, attr)
        except curses.error:
            break
    screen.refresh()


def _prompt_filter(screen: curses.window, height: int) -> re.Pattern[str] | None:
    import curses

    screen.timeout(-1)
    curses.echo()
    curses.curs_set(1)
    screen.addstr(height - 1, 0, "filter (regex): ")
    screen.clrtoeol()
    text = screen.getstr(height - 1, 16, 200).decode("utf-8", "replace").strip()
    curses.noecho()
    curses.curs_set(0)
    try:
        return compile_match(text) if text else None
    except OomlensError:
        return None
