"""bench/RESULTS.md as blocks: each benchmark's section and its lines in the shared
Targets, Notes and How measured sections sit between `<!-- bench:NAME:PART -->`
markers (invisible when rendered), so that `bench/run.py NAME` can replace one
benchmark's blocks and keep the others'. A full run writes every block."""

from __future__ import annotations

import re

from benchlib import Part, md_table

PARTS = ("section", "targets", "notes", "how")
RUN = "run"  # the blocks bench/run.py itself owns: the machine table, the footer

Blocks = dict[tuple[str, str], list[str]]

_BLOCK = re.compile(
    r"^<!-- bench:(?P<name>\w+):(?P<part>\w+) -->\n(?P<body>.*?)"
    r"^<!-- /bench:(?P=name):(?P=part) -->$",
    re.M | re.S,
)
_INTRO = ("Written by `make bench` (`.venv/bin/python bench/run.py`), which rewrites the "
          "whole file; `bench/run.py NAME...` re-measures only the benchmarks named and "
          "replaces their parts (between the `<!-- bench:NAME:... -->` markers). Do not "
          "edit it by hand. All baselines were measured on the same machine in the same "
          "run as the figures they are compared with.")


def parse(text: str) -> Blocks:
    """The blocks of an existing RESULTS.md (none if it predates the markers)."""
    blocks: Blocks = {}
    for match in _BLOCK.finditer(text):
        lines = match["body"].splitlines()
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        blocks[(match["name"], match["part"])] = lines
    return blocks


def blocks_of(name: str, part: Part) -> Blocks:
    blocks = {(name, p): list(getattr(part, p)) for p in PARTS}
    blocks[(name, "notes")] = [f"- {note}" for note in part.notes]
    return blocks


def machine_block(rows: list[tuple[str, str]]) -> Blocks:
    return {(RUN, "machine"): md_table(["", ""], [[k, v] for k, v in rows], "ll")}


def footer_block(elapsed: float) -> Blocks:
    return {(RUN, "how"): [
        "- Targets are judged on the marginal per-process ratio (scan) and on the "
        "median (wall times); the log scan's on the best of its runs.",
        f"- Total benchmark run time: {elapsed:.1f} s."]}


def _wrap(name: str, part: str, lines: list[str]) -> list[str]:
    # The blank line before the end marker ends a table or list cleanly.
    return [f"<!-- bench:{name}:{part} -->", *lines, "", f"<!-- /bench:{name}:{part} -->"]


def document(blocks: Blocks, order: tuple[str, ...]) -> str:
    """The whole file: sections of the benchmarks in `order` that have blocks."""
    present = [n for n in order if any(blocks.get((n, p)) for p in PARTS)]

    def gather(part: str, names: list[str]) -> list[str]:
        out: list[str] = []
        for name in names:
            if blocks.get((name, part)):
                out += _wrap(name, part, blocks[(name, part)])
        return out

    lines = ["# oomlens benchmarks", "", _INTRO, "", "## Machine", ""]
    lines += gather("machine", [RUN])
    for name in present:
        if blocks.get((name, "section")):
            lines += ["", *_wrap(name, "section", blocks[(name, "section")])]
    lines += ["", "## Targets (from the issue)", "", *gather("targets", present)]
    notes = gather("notes", present)
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "## How measured", "", *gather("how", [*present, RUN])]
    return "\n".join(lines) + "\n"
