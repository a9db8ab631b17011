"""report/lines.py: every log prefix style stripped to the kernel's text, with what
the prefix said (host, times, kmsg sequence number) kept; never a raise."""

from __future__ import annotations

import io
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from oomlens.report.lines import normalise_numbered
from oomlens.report.model import LogLine

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "oomanalyser"
PROXMOX = CORPUS / "proxmox-5.15.158-2-pve-cgroupv2-lxc-oom-php-fpm.txt"
RHEL7 = CORPUS / "rhel7-3.10.0-514.6.1.el7-global-oom-mysqld.txt"

CEST = timezone(timedelta(hours=2))
AUG12 = datetime(2025, 8, 12, 3, 54, 3)
MSG = "php-fpm invoked oom-killer: gfp_mask=0x1100cca(GFP_HIGHUSER_MOVABLE), order=0"


def normalise(
    raw: Iterable[str],
    source: str = "",
    *,
    year: int | None = None,
    until_month: int | None = None,
    boot_time: float | None = None,
) -> Iterator[LogLine]:
    """The lines of `raw`, numbered from 1."""
    return normalise_numbered(
        enumerate(raw, 1), source, year=year, until_month=until_month, boot_time=boot_time
    )


def one(line: str, *, year: int | None = None, boot_time: float | None = None) -> LogLine:
    lines = list(normalise([line], "src", year=year, boot_time=boot_time))
    assert len(lines) == 1, lines
    return lines[0]


def texts(raw: list[str]) -> list[str]:
    return [line.text for line in normalise(raw)]


# Raw kernel text: nothing is a prefix, not even what starts with '[' or a digit.
KERNEL_TEXT = [
    MSG,
    " active_file:1263 inactive_file:1167 isolated_file:32",
    "[  390]     0   390    39012     6739      78       51             0 systemd-journal",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
    " [<ffffffff816861ac>] dump_stack+0x19/0x1b",
    "[<ffffffff816861ac>] dump_stack+0x19/0x1b",
    "Node 0 DMA: 0*4kB 0*8kB 1*16kB (U) 0*32kB 2*64kB (U) = 15360kB",
    "Node 0 DMA free:15036kB min:352kB low:440kB high:528kB",
    "runc:[2:INIT] invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0",
    "Killed process 1234 (tmux: client) total-vm:10kB, anon-rss:4kB",
    "8379834 pages RAM",
    "0 pages HighMem/MovableOnly",
    "2025 is a number, not a date",
    "Out of memory: Kill process 6576 (java) score 651 or sacrifice child",
    "Mem-Info:",
    " <TASK>",
    "-- Boot 0123456789abcdef --",
    "<not a priority> at all",
]


@pytest.mark.parametrize("text", KERNEL_TEXT)
def test_kernel_text_is_kept_whole(text: str) -> None:
    assert one(text) == LogLine(text, "src", 1)


@pytest.mark.parametrize(
    ("raw", "text", "monotonic"),
    [
        ("[  123.456789] " + MSG, MSG, 123.456789),
        ("[12345.678901]  <TASK>", " <TASK>", 12345.678901),
        ("[    0.000000] Linux version 6.1.1", "Linux version 6.1.1", 0.0),
        ("[  123.456789] usb 1-1: new high-speed USB device", "usb 1-1: new high-speed USB device",
         123.456789),
        ("[  123.456789] Out of memory: Killed process 7 (x)", "Out of memory: Killed process 7 (x)",
         123.456789),
        # Written to /dev/kmsg by systemd: dmesg shows it with no host.
        ("[    5.100000] systemd[1]: Detected architecture x86-64.",
         "systemd[1]: Detected architecture x86-64.", 5.1),
        ("[  123.456789] [  390]     0   390    39012", "[  390]     0   390    39012", 123.456789),
    ],
)
def test_dmesg(raw: str, text: str, monotonic: float) -> None:
    assert one(raw) == LogLine(text, "src", 1, monotonic=monotonic)


@pytest.mark.parametrize(
    ("stamp", "wallclock"),
    [
        ("[Tue Aug 12 03:54:03 2025]", AUG12),
        ("[Di Aug 12 03:54:03 2025]", AUG12),  # de
        ("[Mo Mär  3 03:54:03 2025]", datetime(2025, 3, 3, 3, 54, 3)),
        ("[Mo Mrz  3 03:54:03 2025]", datetime(2025, 3, 3, 3, 54, 3)),  # older glibc de_DE
        ("[Do Okt 2 03:54:03 2025]", datetime(2025, 10, 2, 3, 54, 3)),
        ("[mar. août 12 03:54:03 2025]", AUG12),  # fr
        ("[jeu. févr.  6 03:54:03 2025]", datetime(2025, 2, 6, 3, 54, 3)),
        ("[lun. juil.  7 03:54:03 2025]", datetime(2025, 7, 7, 3, 54, 3)),
        ("[mer. juin  4 03:54:03 2025]", datetime(2025, 6, 4, 3, 54, 3)),
        ("[mié ene  1 03:54:03 2025]", datetime(2025, 1, 1, 3, 54, 3)),  # es
        ("[mar ago 12 03:54:03 2025]", AUG12),  # es, it
        ("[gio dic 25 03:54:03 2025]", datetime(2025, 12, 25, 3, 54, 3)),  # it
        ("[ter ago 12 03:54:03 2025]", AUG12),  # pt
        ("[sex out 10 03:54:03 2025]", datetime(2025, 10, 10, 3, 54, 3)),  # pt
        ("[di mrt  4 03:54:03 2025]", datetime(2025, 3, 4, 3, 54, 3)),  # nl
        ("[vr mei  9 03:54:03 2025]", datetime(2025, 5, 9, 3, 54, 3)),  # nl
        ("[wto sie 12 03:54:03 2025]", AUG12),  # pl
        ("[pią paź  3 03:54:03 2025]", datetime(2025, 10, 3, 3, 54, 3)),  # pl
        ("[Вт авг 12 03:54:03 2025]", AUG12),  # ru
        ("[Пн мая  5 03:54:03 2025]", datetime(2025, 5, 5, 3, 54, 3)),  # ru, genitive
        ("[пт сент. 5 03:54:03 2025]", datetime(2025, 9, 5, 3, 54, 3)),  # ru
        ("[tis aug 12 03:54:03 2025]", AUG12),  # sv
        ("[mån maj  5 03:54:03 2025]", datetime(2025, 5, 5, 3, 54, 3)),  # sv
        ("[TUE AUG 12 03:54:03 2025]", AUG12),
        ("[Tue August 12 03:54:03 2025]", AUG12),
        # Unknown or ambiguous month (fr "jui": juin or juillet), impossible date:
        # the prefix still goes, the date is not guessed.
        ("[Tue Xyz 12 03:54:03 2025]", None),
        ("[lun. jui  7 03:54:03 2025]", None),
        ("[Tue Feb 30 03:54:03 2025]", None),
        ("[Tue Aug 12 25:54:03 2025]", None),
    ],
)
def test_dmesg_ctime(stamp: str, wallclock: datetime | None) -> None:
    assert one(f"{stamp} {MSG}") == LogLine(MSG, "src", 1, wallclock=wallclock)


def test_dmesg_ctime_keeps_a_kernel_continuation_space() -> None:
    assert one("[Di Aug 12 03:54:03 2025]  <TASK>").text == " <TASK>"


def test_dmesg_iso() -> None:
    wallclock = datetime(2025, 8, 12, 3, 54, 3, 123456, tzinfo=CEST)
    assert one("2025-08-12T03:54:03,123456+02:00 " + MSG) == LogLine(MSG, "src", 1,
                                                                     wallclock=wallclock)


@pytest.mark.parametrize(
    ("raw", "text", "stream", "monotonic", "kernel"),
    [
        ("Aug 12 03:54:03 host kernel: " + MSG, MSG, "host", None, True),
        ("Aug 12 03:54:03 host kernel: [  123.456789] " + MSG, MSG, "host", 123.456789, True),
        ("Aug 12 03:54:03 host kernel:  active_file:1263", " active_file:1263", "host", None, True),
        ("Aug 12 03:54:03 host kernel: [  123.456]  <TASK>", " <TASK>", "host", 123.456, True),
        ("Aug 12 03:54:03 host kernel: [  390]     0   390", "[  390]     0   390", "host", None,
         True),
        ("Aug 12 03:54:03 host kernel: tmux: client invoked oom-killer",
         "tmux: client invoked oom-killer", "host", None, True),
        ("Aug 12 03:54:03 mysrv <kern.warning> kernel: " + MSG, MSG, "mysrv", None, True),
        ("<4>Aug 12 03:54:03 host kernel: " + MSG, MSG, "host", None, True),
        ("Aug 12 03:54:03 host sshd[123]: Accepted publickey for root",
         "Accepted publickey for root", "host", None, False),
        ("Aug 12 03:54:03 host systemd[1]: Started Session 7 of user root.",
         "Started Session 7 of user root.", "host", None, False),
        ("Aug 12 03:54:03 host postfix/smtpd[61898]: connect from unknown[10.0.0.1]",
         "connect from unknown[10.0.0.1]", "host", None, False),
        # A non-kernel line's "[  1.5]" is its own text.
        ("Aug 12 03:54:03 host app: [  1.5] done", "[  1.5] done", "host", None, False),
        ("Aug 12 03:54:03 host -- MARK --", "-- MARK --", "host", None, False),
    ],
)
def test_syslog(raw: str, text: str, stream: str, monotonic: float | None, kernel: bool) -> None:
    assert one(raw, year=2025) == LogLine(text, "src", 1, stream, monotonic, AUG12, None, kernel)


def test_syslog_without_a_year_is_undated() -> None:
    assert one("Aug 12 03:54:03 host kernel: " + MSG) == LogLine(MSG, "src", 1, "host")


@pytest.mark.parametrize(
    ("raw", "wallclock"),
    [
        ("Aug  2 03:54:03 h kernel: x", datetime(2025, 8, 2, 3, 54, 3)),
        ("Aug 12 03:54:03.123456 h kernel: x", datetime(2025, 8, 12, 3, 54, 3, 123456)),
        ("Aug 12 03:54:03.5 h kernel: x", datetime(2025, 8, 12, 3, 54, 3, 500000)),
        ("Mär 12 03:54:03 h kernel: x", datetime(2025, 3, 12, 3, 54, 3)),  # journalctl, de
        ("févr. 12 03:54:03 h kernel: x", datetime(2025, 2, 12, 3, 54, 3)),  # journalctl, fr
        ("Feb 30 03:54:03 h kernel: x", None),
        ("Aug 12 23:59:60 h kernel: x", datetime(2025, 8, 13)),  # leap second
        ("Aug 12 03:54:61 h kernel: x", None),
        ("Xyz 12 03:54:03 h kernel: x", None),
    ],
)
def test_syslog_dates(raw: str, wallclock: datetime | None) -> None:
    line = one(raw, year=2025)
    assert (line.text, line.stream, line.wallclock) == ("x", "h", wallclock)


@pytest.mark.parametrize(
    ("months", "years"),
    [
        (["Dec", "Dec", "Jan", "Jan", "Feb"], [2024, 2024, 2025, 2025, 2025]),  # New Year
        (["Nov", "Feb", "Oct", "Mar"], [2024, 2025, 2025, 2026]),  # back by more than six
        (["Aug", "Apr", "Aug"], [2024, 2024, 2024]),  # back by four: a clock step, no year
    ],
)
def test_syslog_year_is_the_first_lines_and_advances_at_new_year(
    months: list[str], years: list[int]
) -> None:
    raw = [f"{month} 12 03:54:03 h kernel: x" for month in months]
    got = [line.wallclock for line in normalise(raw, year=2024)]
    assert [None if wall is None else wall.year for wall in got] == years


def test_syslog_dates_follow_each_line_within_a_minute() -> None:
    raw = [f"Aug 12 03:54:{s:02d} h kernel: x" for s in (3, 3, 4, 59)] + [
        "Aug 12 03:55:00 h kernel: x"
    ]
    got = [line.wallclock for line in normalise(raw, year=2025)]
    assert got == [AUG12, AUG12, AUG12 + timedelta(seconds=1), datetime(2025, 8, 12, 3, 54, 59),
                   datetime(2025, 8, 12, 3, 55)]


@pytest.mark.parametrize(
    ("raw", "stream", "monotonic", "wallclock", "kernel"),
    [
        ("2025-08-12T03:54:03.123456+02:00 host kernel: " + MSG, "host", None,
         datetime(2025, 8, 12, 3, 54, 3, 123456, tzinfo=CEST), True),
        ("2025-08-12T03:54:03+0200 host kernel: " + MSG, "host", None,
         datetime(2025, 8, 12, 3, 54, 3, tzinfo=CEST), True),
        ("2025-08-12T01:54:03Z host kernel: " + MSG, "host", None,
         datetime(2025, 8, 12, 1, 54, 3, tzinfo=UTC), True),
        ("2025-08-12T03:54:03.123456 host kernel: " + MSG, "host", None,
         datetime(2025, 8, 12, 3, 54, 3, 123456), True),
        ("2025-08-12T03:54:03+02:00 host kernel: [  123.456789] " + MSG, "host", 123.456789,
         datetime(2025, 8, 12, 3, 54, 3, tzinfo=CEST), True),
        ("2025-13-12T03:54:03+02:00 host kernel: " + MSG, "host", None, None, True),
        ("[  123.456789] host kernel: " + MSG, "host", 123.456789, None, True),
        ("<4>[  123.456789] " + MSG, "", 123.456789, None, True),
        ("Aug 12 03:54:03.123456 host kernel: " + MSG, "host", None,
         datetime(2025, 8, 12, 3, 54, 3, 123456), True),
    ],
)
def test_rfc3339_and_journalctl(
    raw: str, stream: str, monotonic: float | None, wallclock: datetime | None, kernel: bool
) -> None:
    assert one(raw, year=2025) == LogLine(MSG, "src", 1, stream, monotonic, wallclock, None,
                                          kernel)


@pytest.mark.parametrize(
    ("raw", "text", "stream", "kernel"),
    [
        ("2025-08-12T03:54:03+02:00 host sshd[9]: Accepted", "Accepted", "host", False),
        ("[  123.456789] host systemd[1]: Started x.", "Started x.", "host", False),
        ("<30>[    5.100000] systemd[1]: Started x.", "systemd[1]: Started x.", "", False),
        ("<30>Aug 12 03:54:03 host kernel: odd", "odd", "host", False),
        ("<kern.warning>[    5.100000] x", "x", "", True),
    ],
)
def test_other_programs_are_not_the_kernel(
    raw: str, text: str, stream: str, kernel: bool
) -> None:
    line = one(raw)
    assert (line.text, line.stream, line.kernel) == (text, stream, kernel)


@pytest.mark.parametrize(
    ("raw", "text", "seq", "monotonic", "kernel"),
    [
        ("6,1234,123456789,-;" + MSG, MSG, 1234, 123.456789, True),
        ("4,99,5000000,c,extra;Out of memory", "Out of memory", 99, 5.0, True),
        ("6,1,2,-;a\\x5cb\\x09c", "a\\b\tc", 1, 2e-6, True),
        ("6,7,1000000,-; active_file:1", " active_file:1", 7, 1.0, True),
        # Facility 1 (LOG_USER): userspace wrote it (devkmsg_write()).
        ("14,5,6,-;systemd[1]: hi", "systemd[1]: hi", 5, 6e-6, False),
    ],
)
def test_kmsg(raw: str, text: str, seq: int, monotonic: float, kernel: bool) -> None:
    assert one(raw) == LogLine(text, "src", 1, "", monotonic, None, seq, kernel)


def test_kmsg_dictionary_lines_are_dropped() -> None:
    raw = ["6,1,2,-;pci 0000:00:1f.2: x", " SUBSYSTEM=pci", " DEVICE=+pci:0000:00:1f.2",
           "6,2,3,-;next"]
    assert [(line.text, line.lineno) for line in normalise(raw)] == [
        ("pci 0000:00:1f.2: x", 1),
        ("next", 4),
    ]


def test_kmsg_escaped_newline_splits() -> None:
    assert texts(["6,1,2,-;a\\x0a b"]) == ["a", " b"]


def test_rsyslog_escapes_split_one_line_into_several() -> None:
    raw = ("Aug 12 03:54:03 host kernel: active_anon:7355653 isolated_anon:0#012 active_file:1263"
           "#011x#012 unevictable:0#012")
    got = list(normalise(["noise", raw], "f", year=2025))
    assert [line.text for line in got] == ["noise", "active_anon:7355653 isolated_anon:0",
                                           " active_file:1263\tx", " unevictable:0"]
    assert {(line.lineno, line.stream, line.wallclock) for line in got[1:]} == {(2, "host", AUG12)}


def test_rsyslog_escapes_in_a_bare_sample() -> None:
    raw = RHEL7.read_text().splitlines()
    joined = next(i for i, line in enumerate(raw) if "#012" in line)
    got = [line for line in normalise(raw) if line.lineno == joined + 1]
    assert [line.text for line in got] == raw[joined].split("#012")
    assert got[1].text.startswith(" active_file:")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # dmesg -T (from the Proxmox sample): indented exactly by the prefix width.
        (["[Di Aug 12 03:54:03 2025] anon 31154200576", " " * 26 + "file 688283648"],
         ["anon 31154200576", "file 688283648"]),
        # journalctl: the same with its prefix.
        (["Aug 12 03:54:03 host kernel: anon 1", " " * 29 + "file 2"], ["anon 1", "file 2"]),
        # Deeper: the extra indentation is the kernel's own.
        (["[  123.456789] Call Trace:", " " * 16 + "dump_stack"], ["Call Trace:", " dump_stack"]),
        # Shallower: only the text.
        (["[  123.456789] a", "    b"], ["a", "b"]),
        (["> [  123.456789] a", ">                 b"], ["a", " b"]),
        # In a bare log an indented line is kernel text.
        (["Mem-Info:", " active_file:1"], ["Mem-Info:", " active_file:1"]),
        (["[  123.456789] a", "Mem-Info:", " active_file:1"], ["a", "Mem-Info:", " active_file:1"]),
        (["   leading"], ["   leading"]),
    ],
)
def test_continuation_lines(raw: list[str], expected: list[str]) -> None:
    assert texts(raw) == expected


def test_continuation_keeps_the_previous_prefix_data() -> None:
    prefix = "Aug 12 03:54:03 host kernel: [  1.5] "
    raw = [prefix + "anon 1", " " * len(prefix) + "file 2"]
    first, second = normalise(raw, "f", year=2025)
    assert second == LogLine("file 2", "f", 2, "host", 1.5, AUG12, None, True)
    assert (first.text, first.monotonic) == ("anon 1", 1.5)


@pytest.mark.parametrize(
    ("raw", "text", "monotonic"),
    [
        ("> > [  1.2] msg", "msg", 1.2),
        (">> [  1.2] msg", "msg", 1.2),
        (">[  1.2] msg", "msg", 1.2),
        (">  active_file:1", " active_file:1", None),
        ("> Node 0 DMA: 0*4kB", "Node 0 DMA: 0*4kB", None),
    ],
)
def test_quoting(raw: str, text: str, monotonic: float | None) -> None:
    line = one(raw)
    assert (line.text, line.monotonic) == (text, monotonic)


def test_quoted_syslog() -> None:
    assert one("> Aug 12 03:54:03 host kernel: x", year=2025) == LogLine(
        "x", "src", 1, "host", None, AUG12
    )


def test_line_endings_blank_lines_and_line_numbers() -> None:
    raw = ["[  1.0] a\r\n", "\r\n", "   \t\n", "", ">", "> ", "b  \n", "c", "Aug 12 03:54:03 h kernel:"]
    got = list(normalise(raw, "f"))
    assert [(line.text, line.lineno, line.source) for line in got] == [
        ("a", 1, "f"),
        ("b", 7, "f"),
        ("c", 8, "f"),
    ]


def test_a_byte_order_mark_is_not_text() -> None:
    assert texts(["\ufeff[  1.0] a", "\ufeff\ufeffb"]) == ["a", "b"]


def test_reads_a_file_lazily() -> None:
    stream = io.StringIO("[  1.0] a\r\n[  2.0] b\r\n", newline="")
    got = normalise(stream, "f")
    assert next(got).text == "a"
    assert stream.tell() < len("[  1.0] a\r\n[  2.0] b\r\n")
    assert [line.text for line in got] == ["b"]


def test_boot_time_dates_monotonic_stamps_in_utc() -> None:
    boot = 1_754_963_000.25
    at = datetime.fromtimestamp(boot + 123.5, tz=UTC)
    assert one("[  123.500000] x", boot_time=boot).wallclock == at
    assert one("6,1,123500000,-;x", boot_time=boot).wallclock == at
    assert one("Aug 12 03:54:03 h kernel: [  123.5] x", boot_time=boot).wallclock == at
    # A prefix's own date wins.
    assert one("Aug 12 03:54:03 h kernel: [  123.5] x", year=2025, boot_time=boot).wallclock == AUG12
    assert one("[999999999999.0] x", boot_time=1e18).wallclock is None


def test_proxmox_dmesg_t_sample_is_the_raw_text_without_its_prefix() -> None:
    raw = PROXMOX.read_text().splitlines()
    prefix = "[Di Aug 12 03:54:03 2025] "
    # Every line is prefixed, or a continuation indented by the prefix width.
    assert all(line.startswith((prefix, " " * len(prefix))) for line in raw)
    got = list(normalise(raw, "proxmox"))
    assert [line.text for line in got] == [line[len(prefix) :].rstrip() for line in raw]
    assert [line.lineno for line in got] == list(range(1, len(raw) + 1))
    assert {(line.wallclock, line.stream, line.monotonic, line.kernel) for line in got} == {
        (AUG12, "", None, True)
    }
    assert "file 688283648" in [line.text for line in got]


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.txt") if p != PROXMOX))
def test_bare_samples_are_their_own_text(name: str) -> None:
    """The other samples have no prefix: only rsyslog's #012 changes them."""
    raw = (CORPUS / name).read_text().splitlines()
    expected = [part.rstrip() for line in raw for part in line.split("#012") if part.strip()]
    assert texts(raw) == expected


# Never a raise, whatever the text.

HOSTILE_PIECES = [
    "[", "]", "<", ">", "> ", " ", "\t", ":", ",", ";", ".", "-", "#012", "#011", "#01", "\\x",
    "\\x4", "\\xzz", "0", "12", "123.456", "2025-08-12T03:54:03", ",123456", "+02:00", "Aug",
    "Mär", "août", " 12 ", "03:54:03", "kernel: ", "host ", "sshd[1]: ", "<4>", "<kern.warning>",
    "6,1,2,-;", " SUBSYSTEM=x", "\x00", "\udcff", "\ud800", "\r", "\n", "\x0b", "\u2028", "é",
]


def _random_lines(seed: int, count: int) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice(HOSTILE_PIECES) for _ in range(rnd.randrange(12)))
            for _ in range(count)]


def _check(raw: list[str], year: int | None = None, boot_time: float | None = None) -> None:
    for line in normalise(raw, "fuzz", year=year, boot_time=boot_time):
        assert line.text
        assert line.text == line.text.rstrip()
        assert 1 <= line.lineno <= len(raw)


@pytest.mark.parametrize("seed", range(20))
def test_never_raises_on_prefix_shaped_junk(seed: int) -> None:
    _check(_random_lines(seed, 2000), year=2025, boot_time=1.7e9)
    _check(_random_lines(seed, 2000))


@pytest.mark.parametrize("errors", ["replace", "surrogateescape"])
def test_never_raises_on_random_bytes(errors: str) -> None:
    rnd = random.Random(errors)
    data = bytes(rnd.randrange(256) for _ in range(200_000))
    _check(data.decode("utf-8", errors=errors).split("\n"), year=2025, boot_time=0.0)


@pytest.mark.parametrize(
    "line",
    [
        "x" * 10_000_000,
        "[" + " " * 10_000_000,
        "[" + "1" * 10_000_000,
        "<4>" * 3_000_000,
        ">" * 10_000_000 + "x",
        "Aug 12 03:54:03 " + "h" * 10_000_000,
        "Aug 12 03:54:03 host kernel: " + "#012" * 2_000_000,
        "6,1,2,-;" + "\\x41" * 2_000_000,
        "2025-08-12T03:54:03 " + "a" * 10_000_000,
        " " * 10_000_000 + "x",
        "\ufeff" * 10_000_000,
    ],
    ids=lambda line: repr(line[:20]),
)
def test_never_raises_on_long_lines(line: str) -> None:
    _check(["[  1.0] before", line, "after"], year=2025)


def test_numbered_lines_keep_their_numbers() -> None:
    numbered = [(3, "[Di Aug 12 03:54:03 2025] anon 1"), (4, " " * 26 + "file 2"), (9, "x#012 y")]
    got = [(line.lineno, line.text) for line in normalise_numbered(numbered, "f")]
    assert got == [(3, "anon 1"), (4, "file 2"), (9, "x"), (9, " y")]


@pytest.mark.parametrize(
    ("months", "years"),
    [
        (["Dec", "Jan"], [2024, 2025]),  # written in Jan 2025: December was 2024
        (["Nov", "Dec"], [2024, 2024]),
        (["Jan", "Jan"], [2025, 2025]),
    ],
)
def test_a_date_after_the_files_last_write_is_from_the_year_before(
    months: list[str], years: list[int]
) -> None:
    raw = [f"{month} 30 10:00:00 host kernel: x" for month in months]
    got = [line.wallclock for line in normalise(raw, year=2025, until_month=1)]
    assert [None if wall is None else wall.year for wall in got] == years
