from datetime import UTC, datetime

import pytest

from hopper.errors import InvalidInput
from hopper.schedule import Cron, Rate, aws_weekday, next_fire_times, parse_schedule

START = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)  # a Friday


def fires(expression: str, count: int = 3, after: datetime = START) -> list[str]:
    return [
        t.strftime("%Y-%m-%d %H:%M %a")
        for t in next_fire_times(parse_schedule(expression), after, count)
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
        ("every 5 minutes", "use rate(VALUE UNIT) or cron"),
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
