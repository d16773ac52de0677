"""Cron fire times across daylight saving time, under each DST policy (no database).

The clock is explicit: every expectation is a list of UTC instants computed from a given
``after``. Transitions used (2026):

- America/New_York: spring forward 03-08 02:00 EST -> 03:00 EDT (07:00 UTC), fall back 11-01
  02:00 EDT -> 01:00 EST (06:00 UTC);
- Europe/Lisbon: spring forward 03-29 01:00 WET -> 02:00 WEST (01:00 UTC), fall back 10-25
  02:00 WEST -> 01:00 WET (01:00 UTC).

Policies (docs/periodic-schedules.md): ``on_dst_gap="shift"`` runs a skipped wall-clock time at
the instant PEP 495 gives it with fold=0 (shifted forward by the gap), ``"skip"`` does not run
it; ``on_dst_fold="first"`` runs a repeated wall-clock time once, at its first occurrence,
``"both"`` at both.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from pg_scheduler.shared.errors import InvalidScheduleError
from pg_scheduler.shared.triggers import (
    ALIASES,
    DST_FOLD_POLICIES,
    DST_GAP_POLICIES,
    CronTrigger,
    IntervalTrigger,
    latest_window_at_or_before,
    trigger_for,
    validate_cron,
    window_at_or_after,
)

NY, LISBON = "America/New_York", "Europe/Lisbon"
HOUR = timedelta(hours=1)
POLICIES = [(gap, fold) for gap in DST_GAP_POLICIES for fold in DST_FOLD_POLICIES]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def hourly(start: datetime, count: int) -> list[datetime]:
    return [start + k * HOUR for k in range(count)]


def fires(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time in ``[start, end)``, by calling next_fire from each previous one."""
    out: list[datetime] = []
    moment = window_at_or_after(trigger, start)
    while moment < end:
        out.append(moment)
        moment = trigger.next_fire(moment)
    return out


def fires_on(trigger: CronTrigger, day: date) -> list[datetime]:
    """The fire times of one local calendar day (midnight to midnight in the trigger's zone)."""
    tz = ZoneInfo(trigger.timezone)
    start = datetime.combine(day, time(), tz)
    end = datetime.combine(day + timedelta(days=1), time(), tz)
    return fires(trigger, start.astimezone(UTC), end.astimezone(UTC))


def assert_well_formed(instants: list[datetime]) -> None:
    assert all(i.tzinfo is UTC for i in instants)
    assert all(a < b for a, b in zip(instants, instants[1:], strict=False)), "not strictly increasing"


# ------------------------------------------------------------------ hourly, the four days


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_hourly_new_york_spring_forward_has_23_runs(gap: str, fold: str) -> None:
    runs = fires_on(CronTrigger("0 * * * *", NY, gap, fold), date(2026, 3, 8))
    # 00:00 and 01:00 EST, then 03:00 EDT .. 23:00 EDT. 02:00 does not exist: shifted it is
    # 03:00 EDT (07:00 UTC), which is a fire time anyway, so "shift" and "skip" agree.
    assert runs == [utc(2026, 3, 8, 5), utc(2026, 3, 8, 6), *hourly(utc(2026, 3, 8, 7), 21)]
    assert len(runs) == 23
    assert_well_formed(runs)


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_hourly_new_york_fall_back_has_24_or_25_runs(gap: str, fold: str) -> None:
    runs = fires_on(CronTrigger("0 * * * *", NY, gap, fold), date(2026, 11, 1))
    # 00:00 EDT = 04:00 UTC, 01:00 EDT = 05:00 UTC, 01:00 EST = 06:00 UTC (the repeat),
    # 02:00 EST = 07:00 UTC .. 23:00 EST = 04:00 UTC on the 2nd.
    first_pass = [utc(2026, 11, 1, 4), utc(2026, 11, 1, 5)]
    rest = hourly(utc(2026, 11, 1, 7), 22)
    if fold == "first":
        assert runs == [*first_pass, *rest] and len(runs) == 24
    else:
        assert runs == [*first_pass, utc(2026, 11, 1, 6), *rest] and len(runs) == 25
    assert_well_formed(runs)


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_hourly_lisbon_spring_forward_has_23_runs(gap: str, fold: str) -> None:
    runs = fires_on(CronTrigger("0 * * * *", LISBON, gap, fold), date(2026, 3, 29))
    # 00:00 WET = 00:00 UTC; 01:00 does not exist (shifted: 02:00 WEST = 01:00 UTC, a fire
    # time anyway); 02:00 WEST = 01:00 UTC .. 23:00 WEST = 22:00 UTC.
    assert runs == hourly(utc(2026, 3, 29, 0), 23)
    assert_well_formed(runs)


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_hourly_lisbon_fall_back_has_24_or_25_runs(gap: str, fold: str) -> None:
    runs = fires_on(CronTrigger("0 * * * *", LISBON, gap, fold), date(2026, 10, 25))
    # 00:00 WEST = 23:00 UTC on the 24th, 01:00 WEST = 00:00 UTC, 01:00 WET = 01:00 UTC (the
    # repeat), 02:00 WET = 02:00 UTC .. 23:00 WET = 23:00 UTC.
    first_pass = [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0)]
    rest = hourly(utc(2026, 10, 25, 2), 22)
    if fold == "first":
        assert runs == [*first_pass, *rest] and len(runs) == 24
    else:
        assert runs == [*first_pass, utc(2026, 10, 25, 1), *rest] and len(runs) == 25
    assert_well_formed(runs)


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
@pytest.mark.parametrize(("tz", "offset"), [(NY, 4), (LISBON, -1)])
def test_hourly_on_a_normal_summer_day_has_24_runs(tz: str, offset: int, gap: str, fold: str) -> None:
    runs = fires_on(CronTrigger("0 * * * *", tz, gap, fold), date(2026, 6, 15))
    assert runs == hourly(utc(2026, 6, 15) + offset * HOUR, 24)


# --------------------------------------------------- daily, at a time in the gap / the fold


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_daily_in_the_new_york_gap(gap: str, fold: str) -> None:
    runs = fires(CronTrigger("30 2 * * *", NY, gap, fold), utc(2026, 3, 7), utc(2026, 3, 10))
    before, after = utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)  # 02:30 EST, 02:30 EDT
    if gap == "shift":  # 02:30 does not exist on the 8th: 03:30 EDT = 07:30 UTC
        assert runs == [before, utc(2026, 3, 8, 7, 30), after]
    else:
        assert runs == [before, after]


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_daily_in_the_new_york_fold(gap: str, fold: str) -> None:
    runs = fires(CronTrigger("30 1 * * *", NY, gap, fold), utc(2026, 10, 31), utc(2026, 11, 3))
    once = [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30)]  # 01:30 EDT
    later = [utc(2026, 11, 2, 6, 30)]  # 01:30 EST
    if fold == "first":
        assert runs == [*once, *later]
    else:  # 01:30 EST on the 1st too
        assert runs == [*once, utc(2026, 11, 1, 6, 30), *later]


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_daily_in_the_lisbon_gap(gap: str, fold: str) -> None:
    runs = fires(CronTrigger("30 1 * * *", LISBON, gap, fold), utc(2026, 3, 28), utc(2026, 3, 31))
    before, after = utc(2026, 3, 28, 1, 30), utc(2026, 3, 30, 0, 30)  # 01:30 WET, 01:30 WEST
    if gap == "shift":  # 01:30 does not exist on the 29th: 02:30 WEST = 01:30 UTC
        assert runs == [before, utc(2026, 3, 29, 1, 30), after]
    else:
        assert runs == [before, after]


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_daily_in_the_lisbon_fold(gap: str, fold: str) -> None:
    runs = fires(CronTrigger("30 1 * * *", LISBON, gap, fold), utc(2026, 10, 24), utc(2026, 10, 27))
    once = [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30)]  # 01:30 WEST
    later = [utc(2026, 10, 26, 1, 30)]  # 01:30 WET
    if fold == "first":
        assert runs == [*once, *later]
    else:  # 01:30 WET on the 25th too
        assert runs == [*once, utc(2026, 10, 25, 1, 30), *later]


@pytest.mark.parametrize(("gap", "fold"), POLICIES)
def test_daily_on_normal_days(gap: str, fold: str) -> None:
    ny = CronTrigger("30 2 * * *", NY, gap, fold)
    assert fires(ny, utc(2026, 1, 14), utc(2026, 1, 16)) == [utc(2026, 1, 14, 7, 30), utc(2026, 1, 15, 7, 30)]
    assert fires(ny, utc(2026, 7, 14), utc(2026, 7, 16)) == [utc(2026, 7, 14, 6, 30), utc(2026, 7, 15, 6, 30)]
    lisbon = CronTrigger("30 1 * * *", LISBON, gap, fold)
    assert fires(lisbon, utc(2026, 7, 14), utc(2026, 7, 15)) == [utc(2026, 7, 14, 0, 30)]


# ----------------------------------------------- where wall-clock order is not time order


def test_fold_both_second_pass_of_an_earlier_wall_time_comes_next() -> None:
    trigger = CronTrigger("0 * * * *", NY, on_dst_fold="both")
    # 05:30 UTC is 01:30 EDT: next is 01:00 EST (06:00 UTC), earlier on the wall clock.
    assert trigger.next_fire(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 1, 6)
    first = CronTrigger("0 * * * *", NY)
    assert first.next_fire(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 1, 7)
    # From inside the repeat (01:30 EST), "first" waits for 02:00 EST.
    assert first.next_fire(utc(2026, 11, 1, 6, 30)) == utc(2026, 11, 1, 7)


def test_shifted_time_still_comes_after_the_gap_closed() -> None:
    trigger = CronTrigger("30 2 * * *", NY)
    # 07:15 UTC is 03:15 EDT, later on the wall clock than 02:30, yet 02:30 shifted (03:30 EDT)
    # is still to come.
    assert trigger.next_fire(utc(2026, 3, 8, 7, 15)) == utc(2026, 3, 8, 7, 30)
    assert trigger.next_fire(utc(2026, 3, 8, 7, 30)) == utc(2026, 3, 9, 6, 30)
    skip = CronTrigger("30 2 * * *", NY, on_dst_gap="skip")
    assert skip.next_fire(utc(2026, 3, 8, 7, 15)) == utc(2026, 3, 9, 6, 30)


def test_a_real_time_after_the_gap_comes_before_a_shifted_one() -> None:
    trigger = CronTrigger("30 2,3 * * *", NY)
    # 02:30 shifted is 03:30 EDT (07:30 UTC); 03:00 is not a fire time here but 03:30 is, and
    # they coincide: one window.
    assert fires_on(trigger, date(2026, 3, 8)) == [utc(2026, 3, 8, 7, 30)]
    half_hourly = CronTrigger("*/30 * * * *", NY)
    # 02:00 -> 03:00 EDT and 02:30 -> 03:30 EDT coincide with real fire times: no duplicates.
    assert fires(half_hourly, utc(2026, 3, 8, 6), utc(2026, 3, 8, 8, 1)) == [
        utc(2026, 3, 8, 6),
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 7, 30),
        utc(2026, 3, 8, 8),
    ]
    # Lord Howe springs forward 30 minutes, 02:00 -> 02:30 (15:30 UTC): 02:20 shifted is 02:50,
    # after 02:40, which comes first although it is later on the wall clock.
    lord_howe = date(2026, 10, 4)
    shift = CronTrigger("20,40 2 * * *", "Australia/Lord_Howe")
    assert fires_on(shift, lord_howe) == [utc(2026, 10, 3, 15, 40), utc(2026, 10, 3, 15, 50)]
    skip = CronTrigger("20,40 2 * * *", "Australia/Lord_Howe", on_dst_gap="skip")
    assert fires_on(skip, lord_howe) == [utc(2026, 10, 3, 15, 40)]


def test_next_fire_is_strictly_after_to_the_microsecond() -> None:
    trigger = CronTrigger("0 * * * *", NY, on_dst_fold="both")
    for moment in fires_on(trigger, date(2026, 11, 1)):
        assert trigger.next_fire(moment - timedelta(microseconds=1)) == moment
        assert trigger.next_fire(moment) > moment
    seconds = CronTrigger("* * * * * */10", LISBON)
    assert seconds.next_fire(utc(2026, 3, 29, 0, 59, 59, 999_999)) == utc(2026, 3, 29, 1)


def test_next_fire_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        CronTrigger("0 * * * *", NY).next_fire(datetime(2026, 3, 8, 1))


def test_windows_helpers_follow_the_policies() -> None:
    both = CronTrigger("0 * * * *", NY, on_dst_fold="both")
    assert window_at_or_after(both, utc(2026, 11, 1, 6)) == utc(2026, 11, 1, 6)
    moment, start = utc(2026, 11, 1, 6, 59), utc(2026, 11, 1, 4)
    assert latest_window_at_or_before(both, moment, start) == utc(2026, 11, 1, 6)
    first = CronTrigger("0 * * * *", NY)
    assert latest_window_at_or_before(first, moment, start) == utc(2026, 11, 1, 5)


# ----------------------------------------------------- against a plain reference, all zones


def reference(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """The policies' definition, applied to every wall-clock fire time near ``[start, end)``."""
    tz = ZoneInfo(trigger.timezone)
    expression = " ".join("*" if f == "?" else f for f in trigger.expression.split())
    expression = ALIASES.get(expression, expression)
    fields = expression.split()
    if len(fields) == 6:  # ours: seconds last; cronsim's: first
        expression = " ".join([fields[5], *fields[:5]])
    wall_start = start.astimezone(tz).replace(tzinfo=None) - timedelta(days=2)
    wall_end = end.astimezone(tz).replace(tzinfo=None) + timedelta(days=2)
    instants: set[datetime] = set()
    for wall in CronSim(expression, wall_start):
        if wall > wall_end:
            break
        fold0 = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        fold1 = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
        if fold0 == fold1:
            instants.add(fold0)
        elif fold0 < fold1:  # repeated
            instants.update([fold0, fold1] if trigger.on_dst_fold == "both" else [fold0])
        elif trigger.on_dst_gap == "shift":  # skipped
            instants.add(fold0)
    return sorted(i for i in instants if start <= i < end)


TRANSITIONS = [
    (NY, utc(2026, 3, 8, 7)),
    (NY, utc(2026, 11, 1, 6)),
    (LISBON, utc(2026, 3, 29, 1)),
    (LISBON, utc(2026, 10, 25, 1)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),  # 30-minute DST
    ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
    ("Antarctica/Troll", utc(2026, 3, 29, 1)),  # 2-hour DST
    ("Antarctica/Troll", utc(2026, 10, 25, 1)),
    ("Pacific/Apia", utc(2011, 12, 30, 10)),  # 2011-12-30 never happened there: a 24-hour gap
    ("Europe/Dublin", utc(2026, 10, 25, 1)),  # "negative" DST in tzdata: winter is the DST
]
EXPRESSIONS = [
    "0 * * * *",
    "*/20 * * * *",
    "*/7 * * * *",
    "30 2 * * *",
    "30 1 * * *",
    "15 0-3 * * *",
    "20,40 2 * * *",
    "*/3 0-4 * * * */40",
    "45 1 * * SUN",
    "@daily",
]


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS, ids=lambda v: str(v))
def test_fire_times_match_the_policies_definition_around_transitions(tz: str, transition: datetime) -> None:
    start, end = transition - timedelta(days=1), transition + timedelta(days=1)
    rng = random.Random(f"{tz}{transition}")
    for expression in EXPRESSIONS:
        for gap, fold in POLICIES:
            trigger = CronTrigger(expression, tz, gap, fold)
            expected = reference(trigger, start, end)
            assert fires(trigger, start, end) == expected, (expression, gap, fold)
            # From arbitrary moments, near the transition above all.
            for _ in range(40):
                moment = transition + timedelta(seconds=rng.uniform(-3, 3) * 3600)
                want = next((i for i in expected if i > moment), None)
                if want is not None:
                    assert trigger.next_fire(moment) == want, (expression, gap, fold, moment)


# ------------------------------------------------------------------ forms and validation


def test_six_fields_put_seconds_last_as_0_2_3_did() -> None:
    every_15s = CronTrigger("* * * * * */15")
    assert fires(every_15s, utc(2026, 1, 1), utc(2026, 1, 1, 0, 1)) == [
        utc(2026, 1, 1, 0, 0, s) for s in (0, 15, 30, 45)
    ]
    weekdays = CronTrigger("0 9 * * MON-FRI 30", LISBON)  # 09:00:30, Monday to Friday
    assert fires(weekdays, utc(2026, 1, 2), utc(2026, 1, 6)) == [
        utc(2026, 1, 2, 9, 0, 30),
        utc(2026, 1, 5, 9, 0, 30),  # Fri 2nd, Mon 5th
    ]
    # Quartz's "?" in a day field means "no specific value".
    mondays = CronTrigger("0 12 ? * MON 0")
    assert fires(mondays, utc(2026, 1, 1), utc(2026, 1, 20)) == [
        utc(2026, 1, 5, 12),
        utc(2026, 1, 12, 12),
        utc(2026, 1, 19, 12),
    ]
    in_gap = CronTrigger("30 2 * * * 0", NY)
    assert fires_on(in_gap, date(2026, 3, 8)) == [utc(2026, 3, 8, 7, 30)]


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@yearly", [utc(2027, 1, 1, 5)]),
        ("@annually", [utc(2027, 1, 1, 5)]),
        ("@monthly", [utc(2026, 12, 1, 5)]),
        ("@weekly", [utc(2026, 11, 29, 5), utc(2026, 12, 6, 5)]),  # Sundays
        ("@daily", [utc(2026, 11, 28, 5) + timedelta(days=d) for d in range(1, 12)]),
        ("@midnight", [utc(2026, 11, 28, 5) + timedelta(days=d) for d in range(1, 12)]),
    ],
)
def test_aliases(alias: str, expected: list[datetime]) -> None:
    trigger = CronTrigger(alias, NY)
    assert fires(trigger, utc(2026, 11, 28, 6), utc(2027, 1, 1, 6))[: len(expected)] == expected
    assert trigger.describe() == f"cron {alias!r} in {NY}"


def test_hourly_alias_is_hourly_across_dst() -> None:
    assert fires_on(CronTrigger("@hourly", NY), date(2026, 3, 8)) == fires_on(
        CronTrigger("0 * * * *", NY), date(2026, 3, 8)
    )


def test_validate_cron_normalises() -> None:
    assert validate_cron("0  9 * *   MON") == "0 9 * * MON"
    assert validate_cron(" @Hourly ") == "@hourly"
    assert validate_cron("*/5 * * * * *") == "*/5 * * * * *"
    assert validate_cron("0 12 ? * MON 0") == "0 12 ? * MON 0"
    assert DST_GAP_POLICIES == ("shift", "skip") and DST_FOLD_POLICIES == ("first", "both")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "invalid cron expression '61 * * * *': minute 61 out of range (0-59)"),
        ("* 24 * * *", "hour 24 out of range (0-23)"),
        ("0 0 * 13 *", "month 13 out of range (1-12)"),
        ("0 0 * * 8", "day-of-week 8 out of range (0-7)"),
        ("* * * * * 60", "second 60 out of range (0-59)"),
        ("*/0 * * * *", "bad minute field '*/0'"),
        ("5-1 * * * *", "bad minute field '5-1'"),
        ("a b c d e", "bad minute field 'a'"),
        ("0 0 30 2 *", "day-of-month '30' never occurs in month '2'"),
        ("* * */20 * 1L", "it never fires"),
        ("* * * *", "4 field(s); expected 5"),
        ("0 0 1 1 * 0 2030", "7 field(s); expected 5"),
        ("", "0 field(s)"),
        ("@reboot", "unknown alias '@reboot'"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(InvalidScheduleError) as raised:
        validate_cron(expression)
    assert message in str(raised.value)
    with pytest.raises(InvalidScheduleError):
        CronTrigger(expression)


def test_invalid_zone_policy_and_type() -> None:
    with pytest.raises(InvalidScheduleError, match="unknown time zone 'Mars/Olympus_Mons'"):
        CronTrigger("0 * * * *", "Mars/Olympus_Mons")
    with pytest.raises(InvalidScheduleError, match="on_dst_gap must be one of shift, skip"):
        CronTrigger("0 * * * *", NY, on_dst_gap="later")
    with pytest.raises(InvalidScheduleError, match="on_dst_fold must be one of first, both"):
        CronTrigger("0 * * * *", NY, on_dst_fold="second")
    with pytest.raises(InvalidScheduleError, match="must be a str"):
        CronTrigger(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidScheduleError, match="on_dst_gap"):
        trigger_for(None, "0 * * * *", NY, "later", "first")


def test_trigger_for_and_describe() -> None:
    assert trigger_for(None, "30 2 * * *", NY, None, None) == CronTrigger("30 2 * * *", NY)
    assert trigger_for(None, "30 2 * * *", None) == CronTrigger("30 2 * * *", "UTC")
    skip_both = trigger_for(None, "30 2 * * *", NY, "skip", "both")
    assert skip_both == CronTrigger("30 2 * * *", NY, "skip", "both")
    assert CronTrigger("30 2 * * *", NY).describe() == "cron '30 2 * * *' in America/New_York"
    assert skip_both.describe() == (
        "cron '30 2 * * *' in America/New_York, on_dst_gap=skip, on_dst_fold=both"
    )
    interval = trigger_for(3600, None, None, "skip", "both")
    assert interval == IntervalTrigger(timedelta(hours=1))


def test_interval_windows_ignore_dst() -> None:
    every_hour = IntervalTrigger(timedelta(hours=1))
    start = utc(2026, 3, 8, 5)
    windows = [window_at_or_after(every_hour, start)]
    while len(windows) < 24:
        windows.append(every_hour.next_fire(windows[-1]))
    assert windows == hourly(start, 24)  # 24 UTC hours, however the wall clock moves
