"""A synthetic syslog for the log-scan benchmark, cached under bench/.cache/.

One host's traditional syslog (`Jan  6 03:04:05 web01 prog[pid]: msg`) over about three
months: sshd, CRON, systemd, the kernel (audit, EXT4-fs, usb, UFW), nginx, postfix,
lines of mostly 60-200 bytes, times only going forward, a reboot every few weeks (the kernel's
`[seconds.micros]` stamps restart). At seeded random places sit N_REPORTS real OOM
reports: the four full reports of tests/fixtures/oomanalyser, five times each, as
the kernel lines of this syslog, with the trigger's and the victim's pids changed in
each copy so that no two are the same kill.

The file is written streaming (a batch of lines at a time) to a temporary name and
renamed when complete; a JSON sidecar says what is in it. It is made again when it is
missing, when GENERATOR_VERSION or the seed changes, or when the corpus files do.
Ordinary lines carry no OOM words, so grep and oomlens must both find exactly the
N_REPORTS kills.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from benchlib import BENCH_DIR, ROOT, log
from syslog_lines import EPOCH_START, HOST, SPAN_S, message_pool

GENERATOR_VERSION = 2  # bump when the output changes: cached files are then remade
SEED = 20250106
CACHE_DIR = BENCH_DIR / ".cache"
CORPUS_DIR = ROOT / "tests" / "fixtures" / "oomanalyser"
CORPUS = (
    "rhel7-3.10.0-514.6.1.el7-global-oom-mysqld.txt",
    "ubuntu2110-5.13.0-19-generic-sysrq-manual-oom.txt",
    "archlinux-6.1.1-arch1-1-global-oom-doxygen.txt",
    "proxmox-5.15.158-2-pve-cgroupv2-lxc-oom-php-fpm.txt",
)
N_REPORTS = 20
# The first second of the log, as its lines print it (syslog times have no zone).
START = dt.datetime.fromtimestamp(EPOCH_START, dt.UTC).replace(tzinfo=None)
BATCH = 8192  # lines per write

_DMESG_T = re.compile(r"\[[^\]]*[0-9]{4}\] ")  # `dmesg -T`: "[Di Aug 12 03:54:03 2025] "
_PID_AFTER = re.compile(r"(?<=PID: )[0-9]+|(?<=pid=)[0-9]+|(?<=process )[0-9]+(?= \()")
_TASK_ROW = re.compile(r"^\[( *)([0-9]+)\]( +[0-9]+ +)([0-9]+)(?= )", re.M)


@dataclass(frozen=True)
class Syslog:
    """A generated file and what is in it (the sidecar's contents)."""

    path: Path
    size: int
    lines: int
    year: int
    reports: list[dict[str, object]]  # template, trigger_pid, victim_pid, comm, lineno
    generated_s: float | None  # None: taken from the cache

    @property
    def victim_pids(self) -> list[int]:
        return [int(str(r["victim_pid"])) for r in self.reports]


# --------------------------------------------------------------------------- reports


def corpus_texts() -> dict[str, str]:
    return {name: (CORPUS_DIR / name).read_text(encoding="ascii") for name in CORPUS}


def report_lines(text: str) -> list[str]:
    """The kernel lines of one corpus report, without `dmesg -T` stamps. A line of a
    stamped file without a stamp continues the message above (memory.stat): in a
    syslog it is a kernel line of its own, without dmesg's alignment."""
    stamped = _DMESG_T.match(text) is not None
    out = []
    for raw in text.splitlines():
        match = _DMESG_T.match(raw)
        line = raw[match.end():] if match else raw.strip() if stamped else raw
        if line:
            out.append(line)
    return out


def vary_pids(lines: list[str], mapping: dict[str, str]) -> list[str]:
    """The report with the pids in `mapping` replaced where the kernel prints a pid:
    `PID: N`, `pid=N`, `process N (` and the pid and tgid columns of a task row."""
    text = "\n".join(lines)
    text = _PID_AFTER.sub(lambda m: mapping.get(m[0], m[0]), text)
    text = _TASK_ROW.sub(
        lambda m: f"[{m[1]}{mapping.get(m[2], m[2])}]{m[3]}{mapping.get(m[4], m[4])}", text)
    return text.split("\n")


def _parse_one(lines: list[str], what: str) -> tuple[int, int, str]:
    """(trigger pid, victim pid, victim comm) of the one event oomlens finds."""
    from oomlens.report.pipeline import events_in

    events = list(events_in([("\n".join(lines) + "\n").encode()], what))
    if len(events) != 1 or events[0].victim is None or events[0].trigger.pid is None:
        raise RuntimeError(f"{what}: expected one OOM kill, oomlens found {len(events)}")
    event = events[0]
    assert event.victim is not None and event.trigger.pid is not None
    return event.trigger.pid, event.victim.pid, event.victim.comm


def make_reports(rng: random.Random) -> list[tuple[str, list[str], dict[str, object]]]:
    """N_REPORTS copies of the corpus reports in a seeded order, each with new
    trigger and victim pids (as many digits as the old, so task rows stay aligned,
    and none that the report already holds); each checked by parsing it."""
    templates = {name: report_lines(text) for name, text in corpus_texts().items()}
    names = [CORPUS[i % len(CORPUS)] for i in range(N_REPORTS)]
    rng.shuffle(names)
    out = []
    used: set[str] = set()
    for name in names:
        lines = templates[name]
        trigger, victim, comm = _parse_one(lines, name)
        taken = set(re.findall(r"[0-9]+", "\n".join(lines))) | used
        mapping: dict[str, str] = {}
        for old in dict.fromkeys((str(trigger), str(victim))):
            digits = len(old)
            while (new := str(rng.randrange(10 ** (digits - 1), 10**digits))) in taken:
                pass
            taken.add(new)
            used.add(new)
            mapping[old] = new
        varied = vary_pids(lines, mapping)
        got = _parse_one(varied, name)
        want = (int(mapping[str(trigger)]), int(mapping[str(victim)]), comm)
        if got != want:
            raise RuntimeError(f"{name}: pids not varied as meant: {got} != {want}")
        out.append((name, varied, {"template": name, "trigger_pid": want[0],
                                    "victim_pid": want[1], "comm": comm}))
    return out


# --------------------------------------------------------------------------- writing

_BOOT_LINES = (
    "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
    "12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC "
    "Debian 6.1.76-1 (2024-02-01)",
    "Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro quiet",
)


class _Writer:
    """Lines out, with the syslog prefix of the current time, in batches."""

    def __init__(self, fh: TextIO, size: int) -> None:
        self.fh = fh
        self.size = size
        self.written = 0
        self.lines = 0
        self.buf: list[str] = []
        self.t = 0.0  # seconds since START
        self.boot = -3.5 * 86400  # the kernel's clock is t - boot
        self._second = -1
        self._day = -1
        self._day_text = ""
        self.stamp = ""

    def tick(self, seconds: float) -> None:
        self.t += seconds
        second = int(self.t)
        if second != self._second:
            self._second = second
            day, rest = divmod(second, 86400)
            if day != self._day:
                self._day = day
                date = START + dt.timedelta(days=day)
                self._day_text = f"{date:%b} {date.day:2d}"
            self.stamp = (f"{self._day_text} {rest // 3600:02d}:{rest // 60 % 60:02d}:"
                          f"{rest % 60:02d} {HOST} ")

    def fits(self, line: str) -> bool:
        return self.written + len(line) <= self.size

    def add(self, line: str) -> None:
        self.buf.append(line)
        self.written += len(line)
        self.lines += 1
        if len(self.buf) >= BATCH:
            self.flush()

    def kernel(self, text: str, micros: float = 0.0) -> str:
        return f"{self.stamp}kernel: [{self.t - self.boot + micros:12.6f}] {text}\n"

    def flush(self) -> None:
        self.fh.write("".join(self.buf))
        self.buf.clear()


def _write(path: Path, size: int, rng: random.Random) -> tuple[int, list[dict[str, object]]]:
    reports = make_reports(rng)
    pool = message_pool(rng)
    mean_len = 22 + sum(len(t) + (16 if k else 0) for k, t in pool) / len(pool) + 1
    rate = size / mean_len / SPAN_S  # lines per second, on average
    margin = size // 50
    at = sorted(rng.sample(range(margin, size - margin), N_REPORTS))
    next_reboot = rng.uniform(20, 40) * 86400
    meta: list[dict[str, object]] = []
    with open(path, "w", encoding="ascii", newline="\n", buffering=1 << 20) as fh:
        out = _Writer(fh, size)
        done = False
        while not done:
            for kernel, text in rng.choices(pool, k=BATCH):
                out.tick(rng.expovariate(rate))
                line = out.kernel(text) if kernel else out.stamp + text + "\n"
                if out.t >= next_reboot:
                    out.boot, next_reboot = out.t, next_reboot + rng.uniform(20, 40) * 86400
                    line = "".join(out.kernel(boot_line) for boot_line in _BOOT_LINES)
                    out.lines += len(_BOOT_LINES) - 1  # add() counts one line
                if not out.fits(line):
                    done = True
                    break
                out.add(line)
                if at and out.written >= at[0]:
                    at.pop(0)
                    _, lines, info = reports[len(meta)]
                    meta.append({**info, "lineno": out.lines + 1})
                    for i, report_line in enumerate(lines):
                        out.add(out.kernel(report_line, micros=i * 1.7e-5))
        out.flush()
    if len(meta) != N_REPORTS:
        raise RuntimeError(f"{path}: wrote {len(meta)} of {N_REPORTS} reports")
    return out.lines, meta


# --------------------------------------------------------------------------- cache


def _corpus_digest() -> str:
    digest = hashlib.sha256()
    for name in CORPUS:
        digest.update((CORPUS_DIR / name).read_bytes())
    return digest.hexdigest()


def cache_path(size: int, seed: int = SEED) -> Path:
    return CACHE_DIR / f"syslog-{size >> 20}MiB-v{GENERATOR_VERSION}-seed{seed}.log"


def _cached(path: Path, want: dict[str, object]) -> Syslog | None:
    sidecar = path.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        actual = path.stat().st_size
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in want.items()) or meta.get("bytes") != actual:
        return None
    return Syslog(path, actual, meta["lines"], START.year, meta["reports"], None)


def _remove_stale(size: int, keep: Path) -> None:
    """Files of the same size from another generator version or seed."""
    for old in CACHE_DIR.glob(f"syslog-{size >> 20}MiB-*"):
        if old.with_suffix(".log") != keep:
            log(f"removing stale {old}")
            old.unlink(missing_ok=True)


def ensure(size: int, seed: int = SEED) -> Syslog:
    """The generated syslog of `size` bytes (at most; whole lines), from the cache
    when it is there and current."""
    path = cache_path(size, seed)
    want: dict[str, object] = {"generator_version": GENERATOR_VERSION, "seed": seed,
                               "size": size, "n_reports": N_REPORTS,
                               "corpus_sha256": _corpus_digest()}
    found = _cached(path, want)
    if found is not None:
        return found
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    _remove_stale(size, path)
    free = shutil.disk_usage(CACHE_DIR).free
    if free < size + (256 << 20):
        raise RuntimeError(f"{CACHE_DIR}: {free >> 20} MiB free, {size >> 20} MiB needed")
    log(f"generating {path.name} ({size >> 20} MiB, once; cached in {CACHE_DIR})")
    start = time.perf_counter()
    rng = random.Random(f"oomlens-bench-syslog-{GENERATOR_VERSION}-{seed}-{size}")
    tmp = path.with_suffix(".tmp")
    try:
        lines, reports = _write(tmp, size, rng)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start
    actual = path.stat().st_size
    meta = {**want, "bytes": actual, "lines": lines, "year": START.year, "host": HOST,
            "generated_seconds": round(elapsed, 1), "reports": reports}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log(f"generated {path.name}: {actual} bytes, {lines} lines in {elapsed:.1f} s")
    return Syslog(path, actual, lines, START.year, reports, elapsed)
