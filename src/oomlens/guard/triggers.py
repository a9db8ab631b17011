"""When the guard acts: thresholds, hysteresis, the trend of decline, when to look next.

Pure: samples in, verdicts and sleep times out; no I/O, no clock, no environment.
The daemon reads a domain (MemAvailable, or a memory cgroup's limit less its working
set), hands the `Sample` to a `Trend` and an `Assessor`, acts on the `Verdict`, and
sleeps for `next_look`.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from oomlens.errors import UsageError

MIB = 1024**2
GIB = 1024**3

KILL_BELOW = "--kill-below"
WARN_BELOW = "--warn-below"
SWAP_KILL_BELOW = "--swap-kill-below"
SWAP_WARN_BELOW = "--swap-warn-below"
PSI_FULL = "--psi-full"
PSI_SOME = "--psi-some"
PREDICT = "--predict"
RECOVER_MARGIN = "--recover-margin"
"""The options the thresholds come from, as reasons and errors name them."""

DEFAULT_MAX_FILL_RATE = 4 * GIB
"""Bytes/s assumed before the trend shows more. One core faulting in fresh anonymous
pages (fault, zero, map) reaches about a million 4 KiB pages a second, ~4 GiB/s; a
faster, many-threaded fill is caught by the trend term of `next_look`."""
DEFAULT_FLOOR = 0.005
"""Seconds, the shortest sleep: at 4 GiB/s the overshoot past the kill level stays
under 20 MiB, and the 200 looks/s it costs are paid only at the edge."""
DEFAULT_CEILING = 0.5
"""Seconds, the longest sleep: an idle box costs ~2 reads/s, and a fill faster than
assumed is noticed within half a second."""

_AMOUNT = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:(?P<percent>%)|(?P<unit>[kmgt](?:ib)?|b)?)",
    re.IGNORECASE,
)
_UNIT_BYTES = {"": 1, "b": 1, "k": 1024, "m": MIB, "g": GIB, "t": 1024**4}


def format_size(size: float) -> str:
    """`858993459` -> `819.2 MiB`: always one decimal, since reasons quote thresholds
    (`units.format_bytes` drops the decimal from 10 of a unit on)."""
    return f"{size / GIB:.1f} GiB" if abs(size) >= GIB else f"{size / MIB:.1f} MiB"


@dataclass(frozen=True, slots=True)
class Amount:
    """A size in bytes or a percent of the domain's total: exactly one is set."""

    bytes: int | None = None
    percent: float | None = None

    def __post_init__(self) -> None:
        if (self.bytes is None) == (self.percent is None):
            raise ValueError("an Amount is either bytes or a percent")

    def resolve(self, total_bytes: int) -> int:
        """The amount in bytes for a domain of `total_bytes` (a percent rounds down)."""
        if self.percent is None:
            assert self.bytes is not None
            return self.bytes
        return math.floor(total_bytes * self.percent / 100)

    def describe(self) -> str:
        """`5%` or `512.0 MiB`, as reasons quote the option's value."""
        return f"{self.percent:g}%" if self.bytes is None else format_size(self.bytes)


def parse_amount(text: str, what: str) -> Amount:
    """`512M`, `512MiB`, `1.5G`, `2g`, `1048576` (bytes), `5%` or `0.5%`.

    K/M/G/T are binary (1024), as `free` and the kernel's own sizes are; a percent
    lies strictly between 0 and 100. UsageError (one line naming `what`) otherwise.
    """
    match = _AMOUNT.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{what}: not a size or percent: {text!r} (use 512M, 1.5G or 5%)")
    # Exact decimal arithmetic on integers: `whole.fraction` is digits / 10**places
    # (fractions.Fraction would cost the daemon its decimal module's memory).
    whole, _, fraction = match["number"].partition(".")
    digits, scale = int(whole + fraction), 10 ** len(fraction)
    if match["percent"]:
        if not 0 < digits < 100 * scale:
            raise UsageError(f"{what}: {text.strip()} is not above 0% and below 100%")
        return Amount(percent=digits / scale)
    unit = (match["unit"] or "").lower()[:1]
    if unit in ("", "b") and digits % scale:
        raise UsageError(f"{what}: {text!r} is not a whole number of bytes")
    size = digits * _UNIT_BYTES[unit] // scale
    if size <= 0:
        raise UsageError(f"{what}: {text!r} must be more than 0 bytes")
    return Amount(bytes=size)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When one domain warns and kills; `validate` checks them against its totals.

    Swap thresholds hold a kill back (as earlyoom does): while swap is left above its
    level, reclaim can still swap out, so memory alone below its level is not yet an
    OOM. Pressure and prediction kill only with memory below the warn level: high
    pressure with plenty available is one cgroup thrashing, not the box running out.
    """

    kill_below: Amount
    warn_below: Amount | None = None
    swap_kill_below: Amount | None = None
    swap_warn_below: Amount | None = None
    psi_full_avg10: float | None = None
    psi_some_avg10: float | None = None
    predict_seconds: float | None = None
    recover_margin: float = 0.05

    @property
    def uses_pressure(self) -> bool:
        """Whether a PSI threshold is set (then each look reads the domain's pressure)."""
        return self.psi_full_avg10 is not None or self.psi_some_avg10 is not None


def validate(thresholds: Thresholds, total_bytes: int, swap_total_bytes: int) -> list[str]:
    """Refuse thresholds that cannot mean what was meant (UsageError, one line); return
    notes on those that merely do nothing here (swap thresholds without swap)."""
    t = thresholds
    if not 0 <= t.recover_margin < 1:
        raise UsageError(f"{RECOVER_MARGIN} must be at least 0 and below 1 (a share of the "
                         f"total), not {t.recover_margin:g}")
    _check_level(KILL_BELOW, t.kill_below, total_bytes, t.recover_margin, "memory")
    if t.warn_below is not None:
        _check_level(WARN_BELOW, t.warn_below, total_bytes, t.recover_margin, "memory")
        _check_order(t.warn_below, t.kill_below, total_bytes, WARN_BELOW, KILL_BELOW)
    for option, value in ((PSI_FULL, t.psi_full_avg10), (PSI_SOME, t.psi_some_avg10)):
        if value is not None and not 0 < value <= 100:
            raise UsageError(f"{option} must be above 0 and at most 100 (a percent of time "
                             f"stalled), not {value:g}")
    if t.predict_seconds is not None and not 0 < t.predict_seconds < math.inf:
        raise UsageError(f"{PREDICT} must be a number of seconds above 0, "
                         f"not {t.predict_seconds:g}")
    for option, value in ((PSI_FULL, t.psi_full_avg10), (PREDICT, t.predict_seconds)):
        if value is not None and t.warn_below is None:
            raise UsageError(f"{option} needs {WARN_BELOW}: it kills only with memory below "
                             "the warn level (pressure with memory to spare is not an OOM)")
    return _check_swap(t, swap_total_bytes)


def _check_level(option: str, amount: Amount, total: int, margin: float, what: str) -> None:
    level = amount.resolve(total)
    if level >= total:
        raise UsageError(f"{option} {amount.describe()} is not below the total {what} "
                         f"({format_size(total)}): {what} is always below it")
    if level + margin * total > total:
        raise UsageError(f"{option} {amount.describe()} plus the {margin * 100:g}% recovery "
                         f"margin is above the total {what} ({format_size(total)}): it would "
                         "never clear")


def _check_order(warn: Amount, kill: Amount, total: int, warn_option: str,
                 kill_option: str) -> None:
    warn_level, kill_level = warn.resolve(total), kill.resolve(total)
    if warn_level < kill_level:
        raise UsageError(f"{warn_option} {warn.describe()} ({format_size(warn_level)}) is "
                         f"below {kill_option} {kill.describe()} ({format_size(kill_level)}): "
                         "the warning must come first")


def _check_swap(t: Thresholds, swap_total: int) -> list[str]:
    given = [(option, amount) for option, amount in
             ((SWAP_KILL_BELOW, t.swap_kill_below), (SWAP_WARN_BELOW, t.swap_warn_below))
             if amount is not None]
    if not given:
        return []
    if swap_total <= 0:
        return [f"no swap here: {option} has no effect; memory alone decides"
                for option, _ in given]
    for option, amount in given:
        _check_level(option, amount, swap_total, t.recover_margin, "swap")
    if t.swap_warn_below is not None and t.swap_kill_below is not None:
        _check_order(t.swap_warn_below, t.swap_kill_below, swap_total, SWAP_WARN_BELOW,
                     SWAP_KILL_BELOW)
    return []


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a domain. Global: MemAvailable of MemTotal (and SwapFree of
    SwapTotal); memory cgroup: its limit less its working set, of its limit.
    Swap and pressure are None where the domain has none or they were not read."""

    time: float
    available_bytes: int
    total_bytes: int
    swap_free_bytes: int | None = None
    swap_total_bytes: int | None = None
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None

    @property
    def has_swap(self) -> bool:
        return bool(self.swap_total_bytes) and self.swap_free_bytes is not None


def _fit(points: list[tuple[float, float]]) -> tuple[float, float, list[float]]:
    """Least squares of available over time: slope, intercept and each point's
    leverage (how far it alone can pull the line)."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)  # > 0: `Trend.add` keeps times distinct
    slope = sum((t - mean_t) * (y - mean_y) for t, y in points) / spread
    leverage = [1 / n + (t - mean_t) ** 2 / spread for t, _ in points]
    return slope, mean_y - slope * mean_t, leverage


class Trend:
    """Recent samples of one domain, for the rate at which available memory falls.

    The rate is the least-squares slope over the window, refitted without the one
    sample whose removal leaves the best fit. Not the steepest recent pair: a 100 MiB
    glitch (a page-cache burst, a racy read) 5 ms from its neighbour would read as
    20 GiB/s and kill on a prediction. Removing sample i lowers the squared error by
    e_i^2 / (1 - h_i) (residual e, leverage h), so the largest of those goes; on a
    steady ramp with one outlier among four or more samples that is the outlier, as
    the rest then fit exactly. (The plain residual would not do: an outlier pulls the
    line towards itself.) The price: a real step down counts only from its second
    sample on; the memory threshold sees it at once anyway.
    """

    MIN_SAMPLES = 4
    """Three to fit after leaving one out."""
    MAX_SAMPLES = 64
    """Bounds the fit's cost at the floor's 200 looks/s (the window then spans 0.32 s)."""

    def __init__(self, window_seconds: float = 2.0) -> None:
        if not window_seconds > 0:
            raise ValueError("the trend window must be above 0 seconds")
        self.window_seconds = window_seconds
        self._samples: deque[Sample] = deque(maxlen=self.MAX_SAMPLES)
        self._rate: float | None = None

    def add(self, sample: Sample) -> None:
        """Keep `sample` and drop those older than the window. A sample no later than
        the newest (a coarse clock) replaces it: two readings of one instant are no
        slope, and the fit needs distinct times."""
        while self._samples and sample.time <= self._samples[-1].time:
            self._samples.pop()
        self._samples.append(sample)
        while sample.time - self._samples[0].time > self.window_seconds:
            self._samples.popleft()
        self._rate = None

    def decline_rate(self) -> float:
        """Bytes/s that available memory falls: >= 0; 0 when rising, flat, or with
        fewer than MIN_SAMPLES samples in the window."""
        if self._rate is None:
            self._rate = self._fit_decline()
        return self._rate

    def _fit_decline(self) -> float:
        points = [(s.time, float(s.available_bytes)) for s in self._samples]
        if len(points) < self.MIN_SAMPLES:
            return 0.0
        slope, intercept, leverage = _fit(points)
        # Leverage stays below 1 with three or more distinct times: no point alone
        # determines the line.
        gain = [(y - intercept - slope * t) ** 2 / (1 - h)
                for (t, y), h in zip(points, leverage, strict=True)]
        worst = gain.index(max(gain))
        slope, _, _ = _fit(points[:worst] + points[worst + 1:])
        return max(0.0, -slope)

    def seconds_until(self, level_bytes: int) -> float | None:
        """Projected seconds until the newest sample's available memory reaches
        `level_bytes` at the current rate: 0 when already there, None when not
        declining (or no samples)."""
        if not self._samples:
            return None
        return _eta(self._samples[-1].available_bytes, level_bytes, self.decline_rate())


def _eta(available: int, level: int, rate: float) -> float | None:
    if available <= level:
        return 0.0
    return None if rate <= 0 else (available - level) / rate


class Level(IntEnum):
    """How close a domain is to running out; ordered, so a latch compares levels."""

    OK = 0
    WARN = 1
    KILL = 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one look found: the level, one sentence with the numbers per reason, and
    stable trigger codes ("memory", "swap", "psi_full", "psi_some", "predicted")."""

    level: Level
    reasons: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()


class _Finding(NamedTuple):
    codes: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Bar:
    """One level resolved against a total; `margin` bytes above it while latched."""

    option: str
    amount: Amount
    level: int
    margin: int

    @property
    def line(self) -> int:
        return self.level + self.margin

    def holds(self, value: int) -> bool:
        return value < self.line

    def describe(self, name: str, value: int) -> str:
        quoted = f"{self.option} {self.amount.describe()}"
        if self.amount.percent is not None:
            quoted += f" ({format_size(self.level)})"
        if self.margin:
            return (f"{name} {format_size(value)} is still below {quoted} plus the recovery "
                    f"margin ({format_size(self.line)})")
        return f"{name} {format_size(value)} is below {quoted}"


def _bar(option: str, amount: Amount | None, total: int | None, margin: float,
         raised: bool) -> _Bar | None:
    if amount is None or total is None:
        return None
    return _Bar(option, amount, amount.resolve(total), round(margin * total) if raised else 0)


_OPTIONS = {Level.KILL: (KILL_BELOW, SWAP_KILL_BELOW), Level.WARN: (WARN_BELOW, SWAP_WARN_BELOW)}


class Assessor:
    """The level of one domain, with hysteresis (a Schmitt trigger).

    A level is entered when its condition holds at the levels given. While the latch
    is at or above a level, that level's memory and swap bars are raised by
    `recover_margin` times their total, so available memory wobbling around a level
    by less than the margin gives one KILL (or WARN) that stays, not a flap per look;
    it clears once available climbs past level + margin. A KILL always has a kill
    condition behind it, at the levels given or, while latched, at the raised ones;
    `reset_after_kill` drops the latch so the next kill needs a fresh crossing.
    """

    def __init__(self, thresholds: Thresholds, *,
                 available_name: str = "available memory") -> None:
        """`available_name` is what reasons call available memory (`MemAvailable`)."""
        self.thresholds = thresholds
        self._name = available_name
        self._latched = Level.OK

    def assess(self, sample: Sample, trend: Trend) -> Verdict:
        """The level of `sample`; `trend` gives the rate for the predictive trigger."""
        kills = self._kill_findings(sample, trend)
        if kills:
            self._latched = Level.KILL
            return _verdict(Level.KILL, kills)
        warns = self._warn_findings(sample)
        self._latched = Level.WARN if warns else Level.OK
        return _verdict(self._latched, warns)

    def reset_after_kill(self) -> None:
        """A kill was made: another needs a fresh crossing of the kill level itself;
        a warning stays latched until memory recovers."""
        self._latched = min(self._latched, Level.WARN)

    def _bars(self, sample: Sample, level: Level) -> tuple[_Bar | None, _Bar | None]:
        """The memory and swap bars of `level` (KILL or WARN) for `sample`, raised while
        the latch is at or above `level`."""
        t, raised = self.thresholds, self._latched >= level
        memory, swap = ((t.kill_below, t.swap_kill_below) if level is Level.KILL
                        else (t.warn_below, t.swap_warn_below))
        memory_option, swap_option = _OPTIONS[level]
        swap_total = sample.swap_total_bytes if sample.has_swap else None
        return (_bar(memory_option, memory, sample.total_bytes, t.recover_margin, raised),
                _bar(swap_option, swap, swap_total, t.recover_margin, raised))

    def _kill_findings(self, sample: Sample, trend: Trend) -> list[_Finding]:
        kill, swap_kill = self._bars(sample, Level.KILL)
        warn, _ = self._bars(sample, Level.WARN)
        assert kill is not None
        found = [self._memory(sample, kill, swap_kill),
                 self._psi_full(sample, warn),
                 self._predicted(sample, trend, kill, warn, swap_kill)]
        return [finding for finding in found if finding is not None]

    def _warn_findings(self, sample: Sample) -> list[_Finding]:
        warn, swap_warn = self._bars(sample, Level.WARN)
        found = [None if warn is None else self._memory(sample, warn, swap_warn),
                 self._psi_some(sample)]
        return [finding for finding in found if finding is not None]

    def _memory(self, sample: Sample, bar: _Bar, swap: _Bar | None) -> _Finding | None:
        """Available memory below `bar`, and swap below `swap` if given and present."""
        if not bar.holds(sample.available_bytes):
            return None
        reason = bar.describe(self._name, sample.available_bytes)
        if swap is None:
            return _Finding(("memory",), (reason,))
        assert sample.swap_free_bytes is not None
        if not swap.holds(sample.swap_free_bytes):
            return None
        return _Finding(("memory", "swap"),
                        (reason, swap.describe("free swap", sample.swap_free_bytes)))

    def _psi_full(self, sample: Sample, warn: _Bar | None) -> _Finding | None:
        limit, value = self.thresholds.psi_full_avg10, sample.psi_full_avg10
        if limit is None or value is None or value < limit:
            return None
        if warn is None or not warn.holds(sample.available_bytes):
            return None
        return _Finding(("psi_full",), (
            f"memory pressure full avg10 {value:.2f}% is at or above {PSI_FULL} {limit:g}%, "
            f"and {warn.describe(self._name, sample.available_bytes)}",))

    def _predicted(self, sample: Sample, trend: Trend, kill: _Bar, warn: _Bar | None,
                   swap_kill: _Bar | None) -> _Finding | None:
        """The kill level reached within `predict_seconds` at the trend's rate, with
        memory below the warn level and swap (if it holds kills back) below its own."""
        limit, available = self.thresholds.predict_seconds, sample.available_bytes
        if limit is None or warn is None or not warn.holds(available) or kill.holds(available):
            return None
        if swap_kill is not None:
            assert sample.swap_free_bytes is not None
            if not swap_kill.holds(sample.swap_free_bytes):
                return None
        rate = trend.decline_rate()
        eta = _eta(available, kill.line, rate)
        if eta is None or eta >= limit:
            return None
        return _Finding(("predicted",), (
            f"{self._name} falls {format_size(rate)}/s and reaches {kill.option} "
            f"({format_size(kill.line)}) in {eta:.2f} s, sooner than {PREDICT} {limit:g} s; "
            f"{warn.describe(self._name, available)}",))

    def _psi_some(self, sample: Sample) -> _Finding | None:
        limit, value = self.thresholds.psi_some_avg10, sample.psi_some_avg10
        if limit is None or value is None or value < limit:
            return None
        return _Finding(("psi_some",), (
            f"memory pressure some avg10 {value:.2f}% is at or above {PSI_SOME} {limit:g}%",))


def _verdict(level: Level, findings: list[_Finding]) -> Verdict:
    codes = dict.fromkeys(code for finding in findings for code in finding.codes)
    return Verdict(level, tuple(r for finding in findings for r in finding.reasons),
                   tuple(codes))


def next_look(sample: Sample, kill_level_bytes: int, trend: Trend, *,
              swap_kill_level_bytes: int | None = None,
              max_fill_rate: float = DEFAULT_MAX_FILL_RATE, floor: float = DEFAULT_FLOOR,
              ceiling: float = DEFAULT_CEILING) -> float:
    """Seconds until the next look, from the physics: headroom H above the kill level
    runs out no sooner than H/R at fill rate R = max(max_fill_rate, 1.5 x the trend's
    rate); half of that, clamped to [floor, ceiling], lands each look with headroom
    left and converges geometrically to the floor as the crossing nears, so a fill no
    faster than R overshoots the level by at most R x floor before a look sees it.

    With `swap_kill_level_bytes` (swap holds kills back) the free swap above its level
    is headroom too: a kill needs both used up, and each byte of the fill comes from
    free memory or from swapping out (earlyoom sums them likewise).
    """
    headroom = sample.available_bytes - kill_level_bytes
    if swap_kill_level_bytes is not None and sample.has_swap:
        assert sample.swap_free_bytes is not None
        headroom = max(0, headroom) + max(0, sample.swap_free_bytes - swap_kill_level_bytes)
    if headroom <= 0:
        return floor
    rate = max(max_fill_rate, 1.5 * trend.decline_rate())
    return min(max(headroom / rate / 2, floor), ceiling)
