"""Log lines from any log source, as kernel messages with every log prefix removed.

People hand us `dmesg` output, syslog files, `journalctl` output, `/dev/kmsg` dumps
and forum pastes; the report parser wants the kernel's own lines. `normalise_numbered`
strips whatever prefix each line carries and keeps what the prefix said (host,
monotonic and wall-clock time, kmsg sequence number) in a `LogLine`.

Prefixes recognised, tried by the first character of the line (after any e-mail
quoting `> `), each optionally followed by the kernel's own `[  123.456789] `:

- none: raw kernel text; a kernel continuation line keeps its leading space;
- `[  123.456789] msg` (dmesg, console) and `journalctl -o short-monotonic`
  (`[  123.456789] host kernel: msg`);
- `dmesg -T` (`[Tue Aug 12 03:54:03 2025] msg`, weekday and month in any of the
  locales in `_MONTH_NAMES`) and `dmesg --time-format iso` (`2025-08-12T03:54:03,123456+02:00 msg`);
- syslog and `journalctl -o short`/`short-precise` (`Aug 12 03:54:03[.123456] host
  kernel: msg`, optionally `host <kern.warning> kernel:`), RFC 3339 syslog and
  `journalctl -o short-iso` (`2025-08-12T03:54:03.123456+02:00 host kernel: msg`);
- a numeric `<4>` or named `<kern.warning>` priority before any of these;
- `/dev/kmsg` records (`6,1234,123456789,-;msg`).

Pure: no I/O, clock or environment; never raises on any `str`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from oomlens.kernel.printk import unescape_devkmsg
from oomlens.report.model import LogLine

# Month names of the locales whose `dmesg -T` and `journalctl` dates we read (both
# print strftime's localised %b). Every prefix of three or more letters of a name
# is accepted as its abbreviation (glibc's abmon: de "Mär", fr "févr.", ru "сент"),
# unless two months share it (fr "jui": juin, juillet).
_MONTH_NAMES = (
    "january february march april may june july august september october november december",
    "januar februar märz april mai juni juli august september oktober november dezember",  # de
    "jänner",  # de_AT: January only
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
    "dicembre",  # it
    "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
    "januari februari maart april mei juni juli augustus september oktober november december",
    "styczeń luty marzec kwiecień maj czerwiec lipiec sierpień wrzesień październik listopad "
    "grudzień",  # pl, nominative
    "stycznia lutego marca kwietnia maja czerwca lipca sierpnia września października "
    "listopada grudnia",  # pl, genitive (as in dates)
    "januari februari mars april maj juni juli augusti september oktober november december",
    "январь февраль март апрель май июнь июль август сентябрь октябрь ноябрь декабрь",
    "января февраля марта апреля мая июня июля августа сентября октября ноября декабря",
)
# Abbreviations that are not prefixes: older glibc de_DE "Mrz", nl_NL "mrt".
_MONTH_ABBREVIATIONS = {"mrz": 3, "mrt": 3}


def _month_table() -> dict[str, int]:
    table: dict[str, int] = {}
    ambiguous: set[str] = set()
    for names in _MONTH_NAMES:
        for month, name in enumerate(names.split(), 1):
            for end in range(3, len(name) + 1):
                key = name[:end]
                if table.setdefault(key, month) != month:
                    ambiguous.add(key)
    for key in ambiguous:
        del table[key]
    return table | _MONTH_ABBREVIATIONS


_MONTHS = _month_table()

# E-mail and forum quoting: "> ", ">", "> > ". Possessive: nothing to backtrack into.
_QUOTE = re.compile(r"(?:>[ \t]?)++")
# The kernel's timestamp, "[%5lu.%06lu] " (kernel/printk/printk.c: print_time()).
# Task-table rows "[  390]" and "[<ffffffff816861ac>]" have no '.', so never match.
_MONOTONIC = re.compile(r"\[ *([0-9]{1,12}\.[0-9]{1,9})\] ?")
# After a monotonic stamp, journalctl -o short-monotonic's "host kernel: " or
# "host unit[pid]: ". dmesg's own lines ("usb 1-1: ...") name neither.
_JOURNAL_HOST = re.compile(r"(\S+) (kernel|[^\s\[:]{1,64}\[[0-9]{1,10}\]): ?")
# util-linux dmesg -T: ctime-like "%a %b %e %H:%M:%S %Y" in the user's locale.
_DMESG_CTIME = re.compile(
    r"\[[^\s\]]{1,16} +([^\s\]]{1,16}) +([0-9]{1,2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r" ([0-9]{4})\] ?"
)
# The syslog header after the time: host, an optional "<kern.warning>" (rsyslog
# templates with %syslogfacility-text%.%syslogseverity-text%), then "tag[pid]: ".
_HOST_TAG = r"(\S+) (?:<[^\s>]{1,32}> )?(?:([^\s\[:]{1,64})(?:\[[0-9]{1,10}\])?: ?)?"
# RFC 3164 syslog, journalctl -o short / short-precise: "Aug 12 03:54:03[.123456]".
_SYSLOG = re.compile(
    r"([^\W\d_]{3,12}\.? {1,2}[0-9]{1,2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?) "
    + _HOST_TAG
)
_SECONDS = tuple(timedelta(seconds=second) for second in range(61))  # 60: leap second
# RFC 3339: rsyslog's RSYSLOG_FileFormat and journalctl -o short-iso with a syslog
# header; dmesg --time-format iso without one and with a decimal comma (util-linux:
# ISO_TIMESTAMP_COMMA_T).
_ISO_DATE = r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
_ISO_ZONE = r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)"
_ISO_SYSLOG = re.compile(_ISO_DATE + r"(?:\.[0-9]{1,9})?" + _ISO_ZONE + " " + _HOST_TAG)
_ISO_DMESG = re.compile(_ISO_DATE + r"(?:[.,][0-9]{1,9})?" + _ISO_ZONE + r"(?=\s|$) ?")
# /dev/kmsg: "prio,seq,ts_us,flags[,more];msg" (kernel/printk/printk.c: devkmsg_read()).
_KMSG = re.compile(r"([0-9]{1,4}),([0-9]{1,20}),([0-9]{1,20}),[^;]{0,64};")
# devkmsg_read() continues a record with " KEY=value" dictionary lines.
_KMSG_PROPERTY = re.compile(r" [A-Z0-9_]{1,64}=")
# A leading syslog priority: "<4>" (rsyslog, dmesg -r) or "<kern.warning>".
_PRIORITY = re.compile(r"<(?:([0-9]{1,4})|([a-z]{1,12})\.[a-z]{1,12})> ?")

# What one line's prefix said:
# (offset of the message, stream, monotonic, wallclock, seq, kernel, kmsg record).
_Prefix = tuple[int, str, float | None, datetime | None, int | None, bool, bool]


def normalise_numbered(
    numbered: Iterable[tuple[int, str]],
    source: str = "",
    *,
    year: int | None = None,
    until_month: int | None = None,
    boot_time: float | None = None,
) -> Iterator[LogLine]:
    """Yield the kernel messages of `(lineno, line)` pairs (line endings optional),
    one `LogLine` per message. The caller may skip lines (`report/scan.py` passes
    on only those a report can need): an indented line continues the previous
    line given, whatever the numbers between.

    `year` dates syslog and journalctl lines, whose prefix has none. With
    `until_month`, (`year`, `until_month`) is when the file was last written, so
    a date in a later month is from the year before (a file that spans New Year).
    Without it, `year` is the first such line's and advances whenever the month
    goes back by more than six. Without `year` those lines keep wallclock None.
    `boot_time` (epoch seconds) dates lines that carry only a monotonic stamp, in
    UTC.

    One physical line can give several messages (rsyslog's `#012`, an escaped
    newline in a kmsg record); blank lines and kmsg dictionary lines give none.
    """
    reader = _Reader(source, year, until_month, boot_time)
    for lineno, line in numbered:
        out = reader.feed(line, lineno)
        if isinstance(out, LogLine):
            yield out
        else:
            yield from out


class _Reader:
    """The state one log needs across lines: the previous prefix (for indented
    continuation lines), the year of syslog dates, and the last date parsed."""

    def __init__(
        self, source: str, year: int | None, until_month: int | None, boot_time: float | None
    ) -> None:
        self._source = source
        self._year = year
        self._until_month = until_month
        self._last_month = 0
        self._boot_time = boot_time
        self._previous: _Prefix | None = None
        self._previous_base = 0  # where the previous line began after its quoting
        # The last date parsed, by its text, and (syslog) its minute.
        self._clock_key = ""
        self._clock: datetime | None = None
        self._minute_key = "-"  # never starts a stamp
        self._minute: datetime | None = None

    def feed(self, line: str, lineno: int) -> LogLine | list[LogLine]:
        """The messages of one raw line (one, the common case, returned bare)."""
        line = line.rstrip()
        if not line:
            return []
        pos = 0
        first = line[0]
        if first == ">":
            quote = _QUOTE.match(line)
            pos = quote.end() if quote is not None else 0
            if pos == len(line):
                return []
            first = line[pos]
        # Syslog lines are most of a big log: try them first.
        prefix = self._parse_syslog(line, pos) if first.isalpha() else None
        if prefix is None:
            if first.isspace():
                return self._continuation(line, pos, lineno)
            prefix = self._parse(line, pos)
            if prefix is None:
                if first == "\ufeff":  # a BOM: a paste saved by a Windows editor
                    return self.feed(line.lstrip("\ufeff"), lineno)
                self._previous = None
                return self._emit(line[pos:], lineno, "", None, None, None, True)
        self._previous = prefix
        self._previous_base = pos
        start, stream, mono, wall, seq, kernel, kmsg = prefix
        text = line[start:]
        if kmsg:
            text = unescape_devkmsg(text)
        if "#01" in text or "\n" in text or not text:
            return self._emit(text, lineno, stream, mono, wall, seq, kernel)
        return LogLine(text, self._source, lineno, stream, mono, wall, seq, kernel)

    def _continuation(self, line: str, pos: int, lineno: int) -> LogLine | list[LogLine]:
        """An indented line: kernel text in a bare log, else the rest of the
        previous message, which journalctl and dmesg indent by the prefix width."""
        previous = self._previous
        if previous is None:
            return self._emit(line[pos:], lineno, "", None, None, None, True)
        start, stream, mono, wall, seq, kernel, kmsg = previous
        if kmsg and _KMSG_PROPERTY.match(line, pos):
            return []
        width = start - self._previous_base
        body = line[pos:]
        text = body[width:] if body[:width].isspace() else body.lstrip()
        return self._emit(text, lineno, stream, mono, wall, seq, kernel)

    def _emit(
        self,
        text: str,
        lineno: int,
        stream: str,
        mono: float | None,
        wall: datetime | None,
        seq: int | None,
        kernel: bool,
    ) -> list[LogLine]:
        # rsyslog escapes control characters as '#' and three octal digits
        # ($EscapeControlCharactersOnReceive): a message the kernel printed with
        # embedded newlines arrives as one line with "#012" in it, tabs as "#011".
        text = text.replace("#011", "\t").replace("#012", "\n")
        source = self._source
        return [
            LogLine(part, source, lineno, stream, mono, wall, seq, kernel)
            for part in (piece.rstrip() for piece in text.split("\n"))
            if part
        ]

    def _parse(self, line: str, pos: int) -> _Prefix | None:
        """Any prefix but a bare syslog one (`feed` tries that first)."""
        first = line[pos]
        if first == "<":
            return self._parse_priority(line, pos)
        if first == "[":
            return self._parse_bracket(line, pos)
        if "0" <= first <= "9":
            if line.startswith("-", pos + 4):
                return self._parse_iso(line, pos)
            return self._parse_kmsg(line, pos)
        return None

    def _parse_priority(self, line: str, pos: int) -> _Prefix | None:
        m = _PRIORITY.match(line, pos)
        if m is None:
            return None
        # Facility 0 is the kernel's (the priority is facility << 3 | level);
        # userspace writing to /dev/kmsg never gets it (devkmsg_write()).
        by_kernel = int(m[1]) >> 3 == 0 if m[1] is not None else m[2] == "kern"
        start = m.end()
        inner = None
        if start < len(line) and line[start] != "<":  # one priority; no recursion
            inner = self._parse(line, start)
            if inner is None and line[start].isalpha():
                inner = self._parse_syslog(line, start)
        if inner is None:
            return (start, "", None, None, None, by_kernel, False)
        offset, stream, mono, wall, seq, kernel, kmsg = inner
        return (offset, stream, mono, wall, seq, kernel and by_kernel, kmsg)

    def _parse_bracket(self, line: str, pos: int) -> _Prefix | None:
        m = _MONOTONIC.match(line, pos)
        if m is not None:
            mono = float(m[1])
            wall = self._since_boot(mono)
            host = _JOURNAL_HOST.match(line, m.end())
            if host is None:
                return (m.end(), "", mono, wall, None, True, False)
            return (host.end(), host[1], mono, wall, None, host[2] == "kernel", False)
        m = _DMESG_CTIME.match(line, pos)
        if m is None:
            return None
        if m[0] != self._clock_key:
            month = _month(m[1])
            self._clock_key = m[0]
            self._clock = None if month is None else _datetime(
                int(m[6]), month, int(m[2]), int(m[3]), int(m[4]), int(m[5]), 0
            )
        return (m.end(), "", None, self._clock, None, True, False)

    def _parse_syslog(self, line: str, pos: int) -> _Prefix | None:
        m = _SYSLOG.match(line, pos)
        if m is None:
            return None
        if m[1] != self._clock_key:
            self._clock_key = m[1]
            self._clock = self._syslog_date(m[1])
        if m[3] != "kernel":
            return (m.end(), m[2], None, self._clock, None, False, False)
        return self._after_kernel_tag(line, m.end(), m[2], self._clock)

    def _syslog_date(self, stamp: str) -> datetime | None:
        """`Aug 12 03:54:03[.123456]`. The minute is cached apart: a big log has
        many lines a minute, and adding seconds is cheaper than a new datetime."""
        if not stamp.startswith(self._minute_key):
            self._minute_key = stamp[: stamp.rindex(":")]
            self._minute = self._syslog_minute(self._minute_key)
        if self._minute is None:
            return None
        colon = len(self._minute_key)
        whole = int(stamp[colon + 1 : colon + 3])
        if whole > 60:
            return None
        if len(stamp) == colon + 3:
            return self._minute + _SECONDS[whole]
        micro = int(stamp[colon + 4 : colon + 10].ljust(6, "0"))
        return self._minute + timedelta(seconds=whole, microseconds=micro)

    def _syslog_minute(self, minute: str) -> datetime | None:
        """`Aug 12 03:54` in the year that `normalise_numbered` explains."""
        name, day, hour_minute = minute.split()
        month = _month(name)
        if month is None:
            return None
        if self._until_month is None and self._last_month - month > 6 and self._year is not None:
            self._year += 1
        self._last_month = month
        if self._year is None:
            return None
        year = self._year
        if self._until_month is not None:
            # The file was last written in (year, until_month): no line is later.
            year = self._year if month <= self._until_month else self._year - 1
        hour, minutes = int(hour_minute[:2]), int(hour_minute[3:])
        return _datetime(year, month, int(day), hour, minutes, 0, 0)

    def _parse_iso(self, line: str, pos: int) -> _Prefix | None:
        m = _ISO_SYSLOG.match(line, pos)
        if m is not None:
            wall = self._iso_date(m[1])
            if m[3] != "kernel":
                return (m.end(), m[2], None, wall, None, False, False)
            return self._after_kernel_tag(line, m.end(), m[2], wall)
        m = _ISO_DMESG.match(line, pos)
        if m is None:
            return None
        return (m.end(), "", None, self._iso_date(m[1]), None, True, False)

    def _iso_date(self, stamp: str) -> datetime | None:
        if stamp != self._clock_key:
            self._clock_key = stamp
            try:
                self._clock = datetime.fromisoformat(stamp)
            except ValueError:  # 2025-13-01: a garbled prefix dates nothing
                self._clock = None
        return self._clock

    def _after_kernel_tag(
        self, line: str, start: int, host: str, wall: datetime | None
    ) -> _Prefix:
        """The kernel's lines in syslog may still carry `[  123.456] `."""
        m = _MONOTONIC.match(line, start) if line.startswith("[", start) else None
        if m is None:
            return (start, host, None, wall, None, True, False)
        mono = float(m[1])
        if wall is None:
            wall = self._since_boot(mono)
        return (m.end(), host, mono, wall, None, True, False)

    def _parse_kmsg(self, line: str, pos: int) -> _Prefix | None:
        m = _KMSG.match(line, pos)
        if m is None:
            return None
        mono = int(m[3]) / 1e6
        facility = int(m[1]) >> 3
        return (m.end(), "", mono, self._since_boot(mono), int(m[2]), facility == 0, True)

    def _since_boot(self, mono: float) -> datetime | None:
        if self._boot_time is None:
            return None
        try:
            return datetime.fromtimestamp(self._boot_time + mono, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None


def _month(name: str) -> int | None:
    return _MONTHS.get(name.lower().rstrip("."))


def _datetime(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int
) -> datetime | None:
    try:
        return datetime(year, month, day, hour, minute, second, micro)
    except ValueError:  # Feb 30, 25:00:00: a garbled prefix dates nothing
        return None
