"""The kernel's OOM reports as they are logged: /dev/kmsg read from its end, every
record through the same normaliser and parser as `oomlens report`, so a simulated
kill gets exactly the analysis a real one would.

Opened before anything is started or triggered, so no record of the kill is missed;
`poll()` is cheap when nothing was logged (one non-blocking read).
"""

from __future__ import annotations

import os

from oomlens.report.lines import normalise_numbered
from oomlens.report.model import OomEvent
from oomlens.report.parser import ReportParser
from oomlens.system.kmsg import KmsgReader
from oomlens.system.logs import kmsg_wire_lines, parse_btime
from oomlens.system.procfs import read_text


class OomFollower:
    """A context manager. `events`: every event completed so far, in order."""

    def __init__(self, kmsg_path: str = "/dev/kmsg", proc_root: str = "/proc") -> None:
        self.source = kmsg_path
        self._reader = KmsgReader(kmsg_path)
        self._reader.follow_from_end()
        self._parser = ReportParser()
        try:
            self._boot_time = parse_btime(read_text(os.path.join(proc_root, "stat")))
        except OSError:
            self._boot_time = None
        self.events: list[OomEvent] = []
        self._lines = 0

    def fileno(self) -> int:
        """Readable when the kernel logged something (for poll())."""
        return self._reader.fileno()

    @property
    def lost(self) -> int:
        """Records overwritten before they were read (the ring buffer overran)."""
        return self._reader.lost

    def poll(self) -> list[OomEvent]:
        """The events that the records logged since the last call completed (a report
        is complete at its kill line; a later oom_reaper line still marks its victim
        reaped)."""
        records = self._reader.read_available()
        if not records:
            return []
        wire = kmsg_wire_lines(records)
        lines = normalise_numbered(enumerate(wire, self._lines + 1), self.source,
                                   boot_time=self._boot_time)
        self._lines += len(wire)
        new: list[OomEvent] = []
        for line in lines:
            new.extend(self._parser.feed(line))
        new.extend(self._parser.settle())
        self.events.extend(new)
        return new

    def finish(self) -> list[OomEvent]:
        """Read what is left and close every report still open (a cut one as it is)."""
        new = self.poll()
        rest = self._parser.flush()
        self.events.extend(rest)
        return new + rest

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> OomFollower:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
