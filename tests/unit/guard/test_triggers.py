"""guard/triggers.py: amounts, validation, the trend, the assessor's levels and
hysteresis, and the polling physics of `next_look`."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oomlens.errors import UsageError
from oomlens.guard.triggers import (
    DEFAULT_CEILING,
    DEFAULT_FLOOR,
    DEFAULT_MAX_FILL_RATE,
    Amount,
    Assessor,
    Level,
    Sample,
    Thresholds,
    Trend,
    next_look,
    parse_amount,
    validate,
)

MIB = 1 << 20
GIB = 1 << 30
TOTAL = 16 * GIB
KILL = 858_993_459  # 5% of 16 GiB, rounded down: 819.2 MiB
WARN = 1_717_986_918  # 10%: 1.6 GiB
RATE = 3 * GIB


def sample(available: int, *, time: float = 0.0, total: int = TOTAL, swap_free: int | None = None,
           swap_total: int | None = None, some: float | None = None,
           full: float | None = None) -> Sample:
    return Sample(time, available, total, swap_free, swap_total, some, full)


def trend_of(points: list[tuple[float, int]], window: float = 2.0) -> Trend:
    trend = Trend(window)
    for time, available in points:
        trend.add(sample(available, time=time))
    return trend


def ramp(start: int, rate: float, *, n: int = 21, step: float = 0.1,
         t0: float = 1000.0) -> list[tuple[float, int]]:
    return [(t0 + i * step, round(start - rate * i * step)) for i in range(n)]


def pct(value: float) -> Amount:
    return Amount(percent=value)


BASE = Thresholds(kill_below=pct(5), warn_below=pct(10))


# --- parse_amount ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "amount"), [
    ("512M", Amount(bytes=512 * MIB)),
    ("512MiB", Amount(bytes=512 * MIB)),
    ("512mib", Amount(bytes=512 * MIB)),
    (" 512 M ", Amount(bytes=512 * MIB)),
    ("1.5G", Amount(bytes=1_610_612_736)),
    ("2g", Amount(bytes=2 * GIB)),
    ("1048576", Amount(bytes=1_048_576)),
    ("1048576B", Amount(bytes=1_048_576)),
    ("4K", Amount(bytes=4096)),
    ("4KiB", Amount(bytes=4096)),
    ("0.5k", Amount(bytes=512)),
    ("0.3K", Amount(bytes=307)),  # 307.2 rounds down to whole bytes
    ("1T", Amount(bytes=1 << 40)),
    (".5G", Amount(bytes=GIB // 2)),
    ("5%", Amount(percent=5.0)),
    ("0.5%", Amount(percent=0.5)),
    ("5 %", Amount(percent=5.0)),
    ("99.9%", Amount(percent=99.9)),
])
def test_parse_amount_valid(text: str, amount: Amount) -> None:
    assert parse_amount(text, "--kill-below") == amount


@pytest.mark.parametrize(("text", "message"), [
    ("x", "--kill-below: not a size or percent: 'x' (use 512M, 1.5G or 5%)"),
    ("", "--kill-below: not a size or percent: '' (use 512M, 1.5G or 5%)"),
    ("512MB", "--kill-below: not a size or percent: '512MB' (use 512M, 1.5G or 5%)"),
    ("-5%", "--kill-below: not a size or percent: '-5%' (use 512M, 1.5G or 5%)"),
    ("1e9", "--kill-below: not a size or percent: '1e9' (use 512M, 1.5G or 5%)"),
    ("nan", "--kill-below: not a size or percent: 'nan' (use 512M, 1.5G or 5%)"),
    ("5%%", "--kill-below: not a size or percent: '5%%' (use 512M, 1.5G or 5%)"),
    ("G", "--kill-below: not a size or percent: 'G' (use 512M, 1.5G or 5%)"),
    ("\u0665%", "--kill-below: not a size or percent: '\u0665%' (use 512M, 1.5G or 5%)"),
    ("0%", "--kill-below: 0% is not above 0% and below 100%"),
    ("100%", "--kill-below: 100% is not above 0% and below 100%"),
    ("150%", "--kill-below: 150% is not above 0% and below 100%"),
    ("0", "--kill-below: '0' must be more than 0 bytes"),
    ("0.0001K", "--kill-below: '0.0001K' must be more than 0 bytes"),
    ("1.5", "--kill-below: '1.5' is not a whole number of bytes"),
])
def test_parse_amount_invalid(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_amount(text, "--kill-below")
    assert str(caught.value) == message


def test_amount_resolves_a_percent_rounding_down_and_bytes_as_they_are() -> None:
    assert pct(5).resolve(TOTAL) == KILL
    assert Amount(bytes=512 * MIB).resolve(TOTAL) == 512 * MIB
    assert Amount(bytes=512 * MIB).resolve(1) == 512 * MIB


@pytest.mark.parametrize("kwargs", [{}, {"bytes": 1, "percent": 1.0}])
def test_amount_is_bytes_or_percent(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="either bytes or a percent"):
        Amount(**kwargs)  # type: ignore[arg-type]


# --- validate --------------------------------------------------------------------------


def test_valid_thresholds_have_no_notes() -> None:
    full = Thresholds(kill_below=pct(5), warn_below=pct(10), swap_kill_below=pct(10),
                      swap_warn_below=pct(20), psi_full_avg10=20, psi_some_avg10=10,
                      predict_seconds=1.0)
    assert validate(full, TOTAL, 4 * GIB) == []


@pytest.mark.parametrize(("thresholds", "message"), [
    (Thresholds(kill_below=Amount(bytes=TOTAL)),
     "--kill-below 16.0 GiB is not below the total memory (16.0 GiB): memory is always below it"),
    (Thresholds(kill_below=pct(5), warn_below=Amount(bytes=20 * GIB)),
     "--warn-below 20.0 GiB is not below the total memory (16.0 GiB): memory is always below it"),
    (Thresholds(kill_below=pct(10), warn_below=pct(5)),
     "--warn-below 5% (819.2 MiB) is below --kill-below 10% (1.6 GiB): the warning must come "
     "first"),
    (Thresholds(kill_below=pct(5), warn_below=pct(96)),
     "--warn-below 96% plus the 5% recovery margin is above the total memory (16.0 GiB): it "
     "would never clear"),
    (Thresholds(kill_below=pct(5), recover_margin=-0.1),
     "--recover-margin must be at least 0 and below 1 (a share of the total), not -0.1"),
    (Thresholds(kill_below=pct(5), recover_margin=1.0),
     "--recover-margin must be at least 0 and below 1 (a share of the total), not 1"),
    (Thresholds(kill_below=pct(5), warn_below=pct(10), psi_full_avg10=0.0),
     "--psi-full must be above 0 and at most 100 (a percent of time stalled), not 0"),
    (Thresholds(kill_below=pct(5), psi_some_avg10=100.5),
     "--psi-some must be above 0 and at most 100 (a percent of time stalled), not 100.5"),
    (Thresholds(kill_below=pct(5), psi_some_avg10=math.nan),
     "--psi-some must be above 0 and at most 100 (a percent of time stalled), not nan"),
    (Thresholds(kill_below=pct(5), warn_below=pct(10), predict_seconds=0.0),
     "--predict must be a number of seconds above 0, not 0"),
    (Thresholds(kill_below=pct(5), warn_below=pct(10), predict_seconds=math.inf),
     "--predict must be a number of seconds above 0, not inf"),
    (Thresholds(kill_below=pct(5), psi_full_avg10=20),
     "--psi-full needs --warn-below: it kills only with memory below the warn level "
     "(pressure with memory to spare is not an OOM)"),
    (Thresholds(kill_below=pct(5), predict_seconds=1.0),
     "--predict needs --warn-below: it kills only with memory below the warn level "
     "(pressure with memory to spare is not an OOM)"),
    (Thresholds(kill_below=pct(5), swap_kill_below=Amount(bytes=4 * GIB)),
     "--swap-kill-below 4.0 GiB is not below the total swap (4.0 GiB): swap is always below it"),
    (Thresholds(kill_below=pct(5), swap_kill_below=pct(20), swap_warn_below=pct(10)),
     "--swap-warn-below 10% (409.6 MiB) is below --swap-kill-below 20% (819.2 MiB): the "
     "warning must come first"),
])
def test_validate_refuses_with_one_line(thresholds: Thresholds, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate(thresholds, TOTAL, 4 * GIB)
    assert str(caught.value) == message
    assert "\n" not in message


def test_swap_thresholds_without_swap_are_a_note_not_an_error() -> None:
    thresholds = Thresholds(kill_below=pct(5), swap_kill_below=pct(10), swap_warn_below=pct(20))
    assert validate(thresholds, TOTAL, 0) == [
        "no swap here: --swap-kill-below has no effect; memory alone decides",
        "no swap here: --swap-warn-below has no effect; memory alone decides",
    ]


# --- Trend -----------------------------------------------------------------------------


def test_steady_decline_gives_its_rate_and_time_to_a_level() -> None:
    trend = trend_of(ramp(8 * GIB, RATE))
    assert trend.decline_rate() == pytest.approx(RATE, rel=1e-9)
    last = 8 * GIB - RATE * 2.0  # 2 GiB left after 2 s
    assert trend.seconds_until(KILL) == pytest.approx((last - KILL) / RATE, rel=1e-9)


@pytest.mark.parametrize("rate", [-RATE, 0.0])
def test_rise_or_flat_is_no_decline(rate: float) -> None:
    trend = trend_of(ramp(4 * GIB, rate))
    assert trend.decline_rate() == 0.0
    assert trend.seconds_until(KILL) is None


def test_already_at_or_below_the_level_is_zero_seconds_even_when_rising() -> None:
    trend = trend_of(ramp(KILL - GIB, -MIB))
    assert trend.seconds_until(KILL) == 0.0
    assert trend_of([(0.0, KILL)]).seconds_until(KILL) == 0.0


def test_no_samples_no_projection() -> None:
    assert Trend().seconds_until(KILL) is None
    assert Trend().decline_rate() == 0.0


def test_too_few_samples_give_no_rate() -> None:
    points = ramp(8 * GIB, RATE, n=Trend.MIN_SAMPLES - 1)
    assert trend_of(points).decline_rate() == 0.0
    assert trend_of(ramp(8 * GIB, RATE, n=Trend.MIN_SAMPLES)).decline_rate() == pytest.approx(RATE)


@pytest.mark.parametrize("n", [4, 5, 8, 21])
@pytest.mark.parametrize("glitch", [-GIB, GIB])
def test_one_noisy_sample_anywhere_makes_no_rate(n: int, glitch: int) -> None:
    # Flat at 8 GiB, 5 ms apart; one reading off by 1 GiB. The steepest pair would say
    # 200 GiB/s; the fit without the worst sample says flat.
    for where in range(n):
        points = [(i * 0.005, 8 * GIB + (glitch if i == where else 0)) for i in range(n)]
        assert trend_of(points).decline_rate() == pytest.approx(0.0, abs=1.0), where


@pytest.mark.parametrize("where", [0, 5, 20])
def test_one_noisy_sample_leaves_a_real_ramp_alone(where: int) -> None:
    points = ramp(8 * GIB, RATE)
    points[where] = (points[where][0], points[where][1] - 2 * GIB)
    assert trend_of(points).decline_rate() == pytest.approx(RATE, rel=1e-6)


@given(rate=st.floats(-8 * GIB, 8 * GIB), n=st.integers(4, 40), where=st.integers(0, 39),
       glitch=st.integers(-4 * GIB, 4 * GIB), step=st.floats(0.001, 0.1))
def test_one_outlier_on_any_ramp_leaves_its_rate(rate: float, n: int, where: int, glitch: int,
                                                 step: float) -> None:
    points = [(100.0 + i * step, 16 * GIB - rate * i * step + (glitch if i == where % n else 0))
              for i in range(n)]
    trend = Trend(window_seconds=n * step)
    for time, available in points:
        trend.add(Sample(time, round(available), 32 * GIB))
    assert trend.decline_rate() == pytest.approx(max(0.0, rate), abs=1e-3 * GIB)


def test_samples_older_than_the_window_are_forgotten() -> None:
    # A fall long ago, then flat for the whole window.
    points = ramp(8 * GIB, RATE, n=10, t0=0.0) + [(10.0 + i * 0.1, 2 * GIB) for i in range(21)]
    assert trend_of(points).decline_rate() == 0.0


def test_sample_count_is_bounded() -> None:
    trend = trend_of(ramp(8 * GIB, MIB, n=500, step=0.001))
    assert len(trend._samples) == Trend.MAX_SAMPLES
    assert trend.decline_rate() == pytest.approx(MIB, rel=1e-6)


def test_a_sample_at_the_same_instant_replaces_the_newest() -> None:
    points = ramp(8 * GIB, RATE, n=5)
    trend = trend_of([*points[:-1], (points[-1][0], 0), points[-1]])
    assert trend.decline_rate() == pytest.approx(RATE, rel=1e-9)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="above 0"):
        Trend(0)


# --- Assessor --------------------------------------------------------------------------


def assess(thresholds: Thresholds, s: Sample, trend: Trend | None = None,
           name: str = "available memory") -> tuple[Level, tuple[str, ...], tuple[str, ...]]:
    verdict = Assessor(thresholds, available_name=name).assess(s, trend or Trend())
    return verdict.level, verdict.triggers, verdict.reasons


def test_ok_above_the_warn_level() -> None:
    assert assess(BASE, sample(4 * GIB)) == (Level.OK, (), ())


def test_warn_between_warn_and_kill() -> None:
    assert assess(BASE, sample(GIB)) == (
        Level.WARN, ("memory",), ("available memory 1.0 GiB is below --warn-below 10% (1.6 GiB)",))


def test_kill_below_the_kill_level() -> None:
    assert assess(BASE, sample(412 * MIB), name="MemAvailable") == (
        Level.KILL, ("memory",), ("MemAvailable 412.0 MiB is below --kill-below 5% (819.2 MiB)",))


def test_levels_are_strict_below() -> None:
    assert assess(BASE, sample(KILL))[0] is Level.WARN
    assert assess(BASE, sample(KILL - 1))[0] is Level.KILL
    assert assess(BASE, sample(WARN))[0] is Level.OK


def test_a_byte_threshold_is_quoted_as_a_size() -> None:
    thresholds = Thresholds(kill_below=Amount(bytes=512 * MIB))
    assert assess(thresholds, sample(100 * MIB))[2] == (
        "available memory 100.0 MiB is below --kill-below 512.0 MiB",)


SWAP = Thresholds(kill_below=pct(5), warn_below=pct(10), swap_kill_below=pct(10))


def test_memory_low_with_plenty_of_swap_is_no_kill() -> None:
    assert assess(SWAP, sample(400 * MIB, swap_free=2 * GIB, swap_total=4 * GIB))[:2] == (
        Level.WARN, ("memory",))


def test_memory_and_swap_low_kill() -> None:
    assert assess(SWAP, sample(400 * MIB, swap_free=100 * MIB, swap_total=4 * GIB)) == (
        Level.KILL, ("memory", "swap"),
        ("available memory 400.0 MiB is below --kill-below 5% (819.2 MiB)",
         "free swap 100.0 MiB is below --swap-kill-below 10% (409.6 MiB)"))


@pytest.mark.parametrize(("swap_free", "swap_total"), [(0, 0), (None, None), (None, 4 * GIB)])
def test_without_swap_memory_alone_decides(swap_free: int | None, swap_total: int | None) -> None:
    assert assess(SWAP, sample(400 * MIB, swap_free=swap_free, swap_total=swap_total))[:2] == (
        Level.KILL, ("memory",))


def test_swap_warn_holds_the_warning_back_too() -> None:
    thresholds = Thresholds(kill_below=pct(5), warn_below=pct(10), swap_warn_below=pct(20))
    assert assess(thresholds, sample(GIB, swap_free=2 * GIB, swap_total=4 * GIB))[0] is Level.OK
    assert assess(thresholds, sample(GIB, swap_free=GIB // 2, swap_total=4 * GIB))[:2] == (
        Level.WARN, ("memory", "swap"))


PSI = Thresholds(kill_below=pct(5), warn_below=pct(10), psi_full_avg10=20, psi_some_avg10=10)


def test_full_pressure_below_the_warn_level_kills() -> None:
    assert assess(PSI, sample(GIB, some=60, full=42)) == (
        Level.KILL, ("psi_full",),
        ("memory pressure full avg10 42.00% is at or above --psi-full 20%, and available "
         "memory 1.0 GiB is below --warn-below 10% (1.6 GiB)",))


def test_full_pressure_with_memory_to_spare_only_warns() -> None:
    assert assess(PSI, sample(8 * GIB, some=60, full=42)) == (
        Level.WARN, ("psi_some",),
        ("memory pressure some avg10 60.00% is at or above --psi-some 10%",))


def test_pressure_below_its_thresholds_or_unknown_is_nothing() -> None:
    assert assess(PSI, sample(GIB, some=5, full=19.99))[:2] == (Level.WARN, ("memory",))
    assert assess(PSI, sample(GIB))[:2] == (Level.WARN, ("memory",))


PREDICT = Thresholds(kill_below=pct(5), warn_below=pct(10), predict_seconds=1.0)


def falling_to(available: int, rate: float = RATE) -> tuple[Sample, Trend]:
    points = ramp(available + round(rate * 2.0), rate)
    return sample(points[-1][1], time=points[-1][0]), trend_of(points)


def test_predicted_exhaustion_below_the_warn_level_kills() -> None:
    s, trend = falling_to(1536 * MIB)  # 0.23 s from the kill level at 3 GiB/s
    assert assess(PREDICT, s, trend) == (
        Level.KILL, ("predicted",),
        ("available memory falls 3.0 GiB/s and reaches --kill-below (819.2 MiB) in 0.23 s, "
         "sooner than --predict 1 s; available memory 1.5 GiB is below --warn-below 10% "
         "(1.6 GiB)",))


def test_no_prediction_above_the_warn_level_or_when_slow_or_rising() -> None:
    assert assess(PREDICT, *falling_to(2 * GIB))[0] is Level.OK
    assert assess(PREDICT, *falling_to(1536 * MIB, rate=512 * MIB))[:2] == (
        Level.WARN, ("memory",))  # 1.4 s away
    assert assess(PREDICT, *falling_to(1536 * MIB, rate=-RATE))[:2] == (Level.WARN, ("memory",))


def test_plenty_of_swap_holds_the_prediction_back() -> None:
    thresholds = Thresholds(kill_below=pct(5), warn_below=pct(10), predict_seconds=1.0,
                            swap_kill_below=pct(10))
    s, trend = falling_to(1536 * MIB)
    plenty = Sample(s.time, s.available_bytes, TOTAL, 2 * GIB, 4 * GIB)
    assert Assessor(thresholds).assess(plenty, trend).level is Level.WARN
    low = Sample(s.time, s.available_bytes, TOTAL, 100 * MIB, 4 * GIB)
    assert Assessor(thresholds).assess(low, trend).triggers == ("predicted",)


def test_below_the_kill_level_the_memory_trigger_speaks_not_the_prediction() -> None:
    s, trend = falling_to(KILL - MIB)
    assert assess(PREDICT, s, trend)[:2] == (Level.KILL, ("memory",))


def run(assessor: Assessor, availables: list[int]) -> list[Level]:
    return [assessor.assess(sample(a), Trend()).level for a in availables]


def test_wobbling_around_the_kill_level_gives_one_kill_that_stays() -> None:
    # Margin 5% of 16 GiB = 819.2 MiB; the wobble is 100 MiB either side.
    thresholds = Thresholds(kill_below=pct(5))
    wobble = [KILL - 100 * MIB, KILL + 100 * MIB] * 5
    levels = run(Assessor(thresholds), [4 * GIB, *wobble, KILL + 800 * MIB, KILL + 820 * MIB])
    assert levels == [Level.OK] + [Level.KILL] * 11 + [Level.OK]


def test_a_held_kill_says_it_is_held_by_the_margin() -> None:
    assessor = Assessor(Thresholds(kill_below=pct(5)))
    assessor.assess(sample(KILL - MIB), Trend())
    verdict = assessor.assess(sample(KILL + 100 * MIB), Trend())
    assert verdict.reasons == ("available memory 919.2 MiB is still below --kill-below 5% "
                               "(819.2 MiB) plus the recovery margin (1.6 GiB)",)
    assert verdict.triggers == ("memory",)


def test_a_held_kill_steps_down_to_warn_then_ok() -> None:
    levels = run(Assessor(BASE), [KILL - MIB, KILL + 900 * MIB, WARN + 800 * MIB,
                                  WARN + 820 * MIB])
    assert levels == [Level.KILL, Level.WARN, Level.WARN, Level.OK]


def test_without_margin_the_levels_follow_each_sample() -> None:
    thresholds = Thresholds(kill_below=pct(5), warn_below=pct(10), recover_margin=0.0)
    assert run(Assessor(thresholds), [KILL - 1, KILL, WARN - 1, WARN]) == [
        Level.KILL, Level.WARN, Level.WARN, Level.OK]


def test_after_a_kill_the_next_needs_a_fresh_crossing() -> None:
    assessor = Assessor(BASE)
    assert run(assessor, [KILL - MIB]) == [Level.KILL]
    assessor.reset_after_kill()
    assert run(assessor, [KILL + 100 * MIB, KILL - MIB]) == [Level.WARN, Level.KILL]
    assessor.reset_after_kill()
    # The warning stays latched: 100 MiB above the warn level is within its margin.
    assert run(assessor, [WARN + 100 * MIB, WARN + 820 * MIB]) == [Level.WARN, Level.OK]


def _kill_condition(t: Thresholds, s: Sample, rate: float, margin: float) -> bool:
    """What a KILL needs, written out apart from the code: levels raised by `margin`."""
    kill = t.kill_below.resolve(s.total_bytes) + round(margin * s.total_bytes)
    assert t.warn_below is not None
    warn = t.warn_below.resolve(s.total_bytes) + round(margin * s.total_bytes)
    swap_ok = True
    if t.swap_kill_below is not None and s.swap_total_bytes and s.swap_free_bytes is not None:
        swap_ok = s.swap_free_bytes < (t.swap_kill_below.resolve(s.swap_total_bytes)
                                       + round(margin * s.swap_total_bytes))
    memory = s.available_bytes < kill and swap_ok
    psi = (t.psi_full_avg10 is not None and s.psi_full_avg10 is not None
           and s.psi_full_avg10 >= t.psi_full_avg10 and s.available_bytes < warn)
    predicted = (t.predict_seconds is not None and s.available_bytes < warn and swap_ok
                 and rate > 0 and (s.available_bytes - kill) / rate < t.predict_seconds)
    return memory or psi or predicted


thresholds_st = st.builds(
    Thresholds,
    kill_below=st.floats(1, 20).map(pct),
    warn_below=st.floats(20, 40).map(pct),
    swap_kill_below=st.none() | st.floats(1, 50).map(pct),
    psi_full_avg10=st.none() | st.floats(1, 100),
    predict_seconds=st.none() | st.floats(0.1, 10),
    recover_margin=st.floats(0, 0.3),
)
sample_st = st.builds(
    lambda avail, swap_total, swap_share, full: Sample(
        0.0, avail, TOTAL, round(swap_total * swap_share), swap_total, None, full),
    st.integers(0, TOTAL), st.sampled_from([0, 4 * GIB]), st.floats(0, 1),
    st.none() | st.floats(0, 100),
)
rate_st = st.sampled_from([0.0, MIB, GIB, RATE, 64 * GIB])


def steady(rate: float) -> Trend:
    return trend_of(ramp(8 * GIB, rate, n=5))


@given(thresholds_st, sample_st, rate_st)
def test_kill_only_when_a_kill_condition_holds(t: Thresholds, s: Sample, rate: float) -> None:
    trend = steady(rate)
    verdict = Assessor(t).assess(s, trend)
    assert (verdict.level is Level.KILL) == _kill_condition(t, s, trend.decline_rate(), 0.0)
    assert all("\n" not in reason for reason in verdict.reasons)
    assert bool(verdict.reasons) == (verdict.level is not Level.OK)


@given(thresholds_st, st.lists(st.tuples(sample_st, rate_st), min_size=1, max_size=12))
def test_a_held_kill_never_strays_beyond_the_margin(
        t: Thresholds, looks: list[tuple[Sample, float]]) -> None:
    assessor = Assessor(t)
    for s, rate in looks:
        trend = steady(rate)
        if assessor.assess(s, trend).level is Level.KILL:
            assert _kill_condition(t, s, trend.decline_rate(), t.recover_margin)


# --- next_look -------------------------------------------------------------------------


def test_huge_headroom_sleeps_the_ceiling() -> None:
    assert next_look(sample(15 * GIB), KILL, Trend()) == DEFAULT_CEILING


@pytest.mark.parametrize("available", [KILL, KILL - GIB, 0])
def test_at_or_below_the_kill_level_looks_at_the_floor(available: int) -> None:
    assert next_look(sample(available), KILL, Trend()) == DEFAULT_FLOOR


def test_between_it_halves_the_time_to_the_level_at_the_assumed_rate() -> None:
    headroom = 2 * GIB
    expected = headroom / DEFAULT_MAX_FILL_RATE / 2  # 0.25 s
    assert next_look(sample(KILL + headroom), KILL, Trend()) == pytest.approx(expected)


def test_a_fill_faster_than_assumed_shortens_the_sleep() -> None:
    trend = trend_of(ramp(12 * GIB, 8 * GIB, n=5, step=0.05))
    assert next_look(sample(KILL + 2 * GIB), KILL, trend) == pytest.approx(
        2 * GIB / (1.5 * 8 * GIB) / 2)


def test_free_swap_above_its_level_is_headroom_too() -> None:
    s = sample(KILL - MIB, swap_free=3 * GIB, swap_total=4 * GIB)
    assert next_look(s, KILL, Trend()) == DEFAULT_FLOOR
    assert next_look(s, KILL, Trend(), swap_kill_level_bytes=GIB) == pytest.approx(
        2 * GIB / DEFAULT_MAX_FILL_RATE / 2)
    both_low = sample(KILL - MIB, swap_free=GIB // 2, swap_total=4 * GIB)
    assert next_look(both_low, KILL, Trend(), swap_kill_level_bytes=GIB) == DEFAULT_FLOOR


@settings(max_examples=300, deadline=None)
@given(
    max_fill=st.floats(MIB, 8 * GIB),
    share=st.floats(0.02, 1.0),
    seconds_to_cross=st.floats(0, 20),
    floor=st.floats(0.001, 0.02),
    ceiling=st.floats(0.05, 1.0),
    level=st.integers(0, 4 * GIB),
)
def test_looks_never_overshoot_the_level_by_more_than_rate_times_floor(
        max_fill: float, share: float, seconds_to_cross: float, floor: float, ceiling: float,
        level: int) -> None:
    # A steady fill no faster than max_fill_rate, from seconds_to_cross above the level.
    rate = max_fill * share
    start = level + rate * seconds_to_cross
    trend, time = Trend(), 0.0
    for _ in range(100_000):
        available = math.floor(start - rate * time)
        if available < level:
            assert level - available <= rate * floor + 1
            return
        s = sample(available, time=time)
        trend.add(s)
        time += next_look(s, level, trend, max_fill_rate=max_fill, floor=floor, ceiling=ceiling)
    pytest.fail("the simulation never reached the level")
