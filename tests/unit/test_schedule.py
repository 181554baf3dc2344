from datetime import UTC, datetime

import pytest

from hopper.errors import InvalidInput
from hopper.schedule import (
    At,
    Cron,
    Rate,
    aws_weekday,
    next_fire_times,
    parse_schedule,
    parse_timezone,
)

START = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)  # a Friday


def fires(expression: str, count: int = 3, after: datetime = START) -> list[str]:
    return [
        t.strftime("%Y-%m-%d %H:%M %a")
        for t in next_fire_times(parse_schedule(expression), after, count)
    ]


def zoned(expression: str, zone: str, after: datetime, count: int = 4) -> list[str]:
    """Fire times as `local time (UTC offset) = UTC time`."""
    tz = parse_timezone(zone)
    return [
        f"{t.astimezone(tz):%m-%d %H:%M %z} = {t:%m-%d %H:%MZ}"
        for t in next_fire_times(parse_schedule(expression), after, count, tz)
    ]


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(15 minutes)", 900),
        ("rate(1 hour)", 3600),
        ("rate(2 days)", 172800),
    ],
)
def test_rates(expression: str, seconds: int) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, Rate) and schedule.seconds == seconds


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("rate(1 minutes)", "singular unit 'minute'"),
        ("rate(5 minute)", "plural unit 'minutes'"),
        ("rate(0 minutes)", "greater than 0"),
        ("rate(-1 minutes)", "rate(VALUE UNIT)"),
        ("rate(5 weeks)", "minute(s), hour(s) or day(s)"),
        ("rate(five minutes)", "rate(VALUE UNIT)"),
        ("every 5 minutes", "use rate(VALUE UNIT), cron("),
        ("at(2027-01-01)", "at(YYYY-MM-DDTHH:MM:SS)"),
        ("at(2027-13-01T00:00:00)", "is not a date and time"),
        ("cron(0 12 * * ?)", "cron needs 6 fields"),
        ("cron(0 12 * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 12 ? * ? *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(60 12 * * ? *)", "minutes value 60 is out of 0-59"),
        ("cron(0 24 * * ? *)", "hours value 24 is out of 0-23"),
        ("cron(0 0 32 * ? *)", "day-of-month value 32 is out of 1-31"),
        ("cron(0 0 ? 13 * *)", "month value 13 is out of 1-12"),
        ("cron(0 0 ? * 8 *)", "day-of-week value 8 is out of 1-7"),
        ("cron(0 0 ? * 0 *)", "day-of-week value 0 is out of 1-7"),
        ("cron(0 0 * * ? 2200)", "year value 2200 is out of 1970-2199"),
        ("cron(0/0 0 * * ? *)", "step '0' must be a positive number"),
        ("cron(30-10 0 * * ? *)", "range '30-10' runs backwards"),
        ("cron(0 0 ? * MON#6 *)", "use DAY#N with N 1-5"),
        ("cron(0 0 ? * FUNDAY *)", "'FUNDAY' is not understood"),
    ],
)
def test_invalid_expressions_name_the_problem(expression: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_schedule(expression)
    assert message in str(caught.value)


def test_weekdays_are_numbered_from_sunday() -> None:
    assert aws_weekday(datetime(2026, 11, 29).date()) == 1  # Sunday
    assert aws_weekday(datetime(2026, 11, 30).date()) == 2  # Monday
    assert aws_weekday(datetime(2026, 11, 28).date()) == 7  # Saturday


def test_rate_counts_from_now() -> None:
    assert fires("rate(15 minutes)") == [
        "2026-11-27 08:45 Fri",
        "2026-11-27 09:00 Fri",
        "2026-11-27 09:15 Fri",
    ]


def test_cron_daily_and_steps() -> None:
    assert fires("cron(0 12 * * ? *)") == [
        "2026-11-27 12:00 Fri",
        "2026-11-28 12:00 Sat",
        "2026-11-29 12:00 Sun",
    ]
    assert fires("cron(0/20 8 * * ? *)", 4) == [
        "2026-11-27 08:40 Fri",
        "2026-11-28 08:00 Sat",
        "2026-11-28 08:20 Sat",
        "2026-11-28 08:40 Sat",
    ]
    assert fires("cron(15,45 9-10 * * ? *)", 4) == [
        "2026-11-27 09:15 Fri",
        "2026-11-27 09:45 Fri",
        "2026-11-27 10:15 Fri",
        "2026-11-27 10:45 Fri",
    ]


def test_cron_weekday_names_and_ranges() -> None:
    assert fires("cron(0 18 ? * MON-FRI *)") == [
        "2026-11-27 18:00 Fri",
        "2026-11-30 18:00 Mon",
        "2026-12-01 18:00 Tue",
    ]
    assert fires("cron(0 9 ? * 1,7 *)") == [
        "2026-11-28 09:00 Sat",
        "2026-11-29 09:00 Sun",
        "2026-12-05 09:00 Sat",
    ]


def test_cron_last_day_and_weekday_specials() -> None:
    assert fires("cron(0 0 L * ? *)") == [
        "2026-11-30 00:00 Mon",
        "2026-12-31 00:00 Thu",
        "2027-01-31 00:00 Sun",
    ]
    # 2027-01-31 is a Sunday: LW is Friday the 29th.
    assert fires("cron(0 0 LW * ? *)", 3) == [
        "2026-11-30 00:00 Mon",
        "2026-12-31 00:00 Thu",
        "2027-01-29 00:00 Fri",
    ]
    # The 1st of Nov 2026 is a Sunday... and of Aug 2026 a Saturday: 1W never leaves the month.
    assert fires("cron(0 0 1W * ? *)", 2, datetime(2026, 7, 15, tzinfo=UTC)) == [
        "2026-08-03 00:00 Mon",
        "2026-09-01 00:00 Tue",
    ]
    assert fires("cron(0 0 15W * ? *)", 1) == ["2026-12-15 00:00 Tue"]
    assert fires("cron(0 10 ? * 6L *)") == [
        "2026-11-27 10:00 Fri",
        "2026-12-25 10:00 Fri",
        "2027-01-29 10:00 Fri",
    ]
    assert fires("cron(0 10 ? * 3#2 *)") == [
        "2026-12-08 10:00 Tue",
        "2027-01-12 10:00 Tue",
        "2027-02-09 10:00 Tue",
    ]


def test_cron_months_years_and_the_end_of_time() -> None:
    assert fires("cron(0 0 1 JAN,JUL ? 2027-2028)", 5) == [
        "2027-01-01 00:00 Fri",
        "2027-07-01 00:00 Thu",
        "2028-01-01 00:00 Sat",
        "2028-07-01 00:00 Sat",
    ]
    assert fires("cron(0 0 29 2 ? *)", 2) == ["2028-02-29 00:00 Tue", "2032-02-29 00:00 Sun"]
    assert fires("cron(0 0 1 1 ? 2020)") == []


def test_parsed_cron_fields() -> None:
    cron = parse_schedule("cron(5 4 ? * SUN *)")
    assert isinstance(cron, Cron)
    assert (
        cron.minutes == {5}
        and cron.hours == {4}
        and cron.weekdays == frozenset({1})
        and cron.days is None
    )


# America/New_York in 2027: clocks go forward at 02:00 on 14 March, back at 02:00 on 7 November.
NEW_YORK = "America/New_York"


def test_a_cron_time_the_spring_change_skips_does_not_fire_that_day() -> None:
    assert zoned("cron(30 2 * * ? *)", NEW_YORK, datetime(2027, 3, 12, tzinfo=UTC)) == [
        "03-12 02:30 -0500 = 03-12 07:30Z",
        "03-13 02:30 -0500 = 03-13 07:30Z",
        # 02:30 on the 14th does not exist there.
        "03-15 02:30 -0400 = 03-15 06:30Z",
        "03-16 02:30 -0400 = 03-16 06:30Z",
    ]


def test_a_cron_time_the_autumn_change_repeats_fires_once() -> None:
    assert zoned("cron(30 1 * * ? *)", NEW_YORK, datetime(2027, 11, 6, tzinfo=UTC), 3) == [
        "11-06 01:30 -0400 = 11-06 05:30Z",
        "11-07 01:30 -0400 = 11-07 05:30Z",
        "11-08 01:30 -0500 = 11-08 06:30Z",
    ]
    # Every half hour: the repeated hour's times already fired, so UTC sees a gap of 90 min.
    assert zoned("cron(0/30 * * * ? *)", NEW_YORK, datetime(2027, 11, 7, 4, 10, tzinfo=UTC)) == [
        "11-07 00:30 -0400 = 11-07 04:30Z",
        "11-07 01:00 -0400 = 11-07 05:00Z",
        "11-07 01:30 -0400 = 11-07 05:30Z",
        "11-07 02:00 -0500 = 11-07 07:00Z",
    ]


def test_a_daily_cron_keeps_its_local_time_and_a_daily_rate_keeps_24_hours() -> None:
    after = datetime(2027, 3, 13, 12, 0, tzinfo=UTC)
    assert zoned("cron(0 9 * * ? *)", NEW_YORK, after, 3) == [
        "03-13 09:00 -0500 = 03-13 14:00Z",
        "03-14 09:00 -0400 = 03-14 13:00Z",
        "03-15 09:00 -0400 = 03-15 13:00Z",
    ]
    # Started at 07:00 EST: 24 hours later the clocks read 08:00 EDT.
    assert zoned("rate(1 day)", NEW_YORK, after, 2) == [
        "03-14 08:00 -0400 = 03-14 12:00Z",
        "03-15 08:00 -0400 = 03-15 12:00Z",
    ]


def test_the_zone_s_date_may_be_a_day_behind_utc() -> None:
    # 03:00Z on 1 January is 19:00 on 31 December in Los Angeles.
    after = datetime(2027, 1, 1, 3, 0, tzinfo=UTC)
    assert zoned("cron(0 20 * * ? *)", "America/Los_Angeles", after, 2) == [
        "12-31 20:00 -0800 = 01-01 04:00Z",
        "01-01 20:00 -0800 = 01-02 04:00Z",
    ]
    # And ahead of it in Auckland (UTC+13 in January).
    assert zoned("cron(0 1 * * ? *)", "Pacific/Auckland", after, 1) == [
        "01-02 01:00 +1300 = 01-01 12:00Z"
    ]


def test_one_time_schedules_fire_once_in_their_zone() -> None:
    schedule = parse_schedule("at(2027-06-01T09:30:00)")
    assert isinstance(schedule, At)
    assert zoned("at(2027-06-01T09:30:00)", "Europe/Berlin", START) == [
        "06-01 09:30 +0200 = 06-01 07:30Z"
    ]
    assert fires("at(2027-06-01T09:30:00)") == ["2027-06-01 09:30 Tue"]
    assert fires("at(2020-06-01T09:30:00)") == []  # past: it never fires again
    with pytest.raises(InvalidInput, match="does not exist in America/New_York"):
        zoned("at(2027-03-14T02:30:00)", NEW_YORK, START)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "EST5"])
def test_unknown_time_zones_are_bad_input(name: str) -> None:
    with pytest.raises(InvalidInput, match="not an IANA time zone name"):
        parse_timezone(name)
