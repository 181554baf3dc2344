"""EventBridge schedule expressions: `rate(...)` and six-field `cron(...)`, validated locally.

The rules are AWS's (EventBridge "Schedule expressions for rules"): a rate's unit is singular
for 1 and plural otherwise, and 0 is refused; cron has six fields, Minutes Hours Day-of-month
Month Day-of-week Year, with days of the week numbered 1 (SUN) to 7 (SAT), and exactly one of
Day-of-month and Day-of-week set to `?`. Day-of-month takes `L`, `LW` and `nW`; Day-of-week
takes `nL` and `n#k`. All times are UTC.

croniter is deliberately not used: its sixth field is seconds and its weekdays start at 0.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hopper.errors import InvalidInput

_RATE_RE = re.compile(r"^rate\((.*)\)$")
_CRON_RE = re.compile(r"^cron\((.*)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
YEAR_MIN, YEAR_MAX = 1970, 2199


@dataclass(frozen=True)
class Rate:
    expression: str
    seconds: int


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    months: frozenset[int]
    years: frozenset[int]
    # Day-of-month; None when it is `?`.
    days: frozenset[int] | None
    last_day: bool
    last_weekday: bool
    nearest_weekday: frozenset[int]
    # Day-of-week (1 = SUN); None when it is `?`.
    weekdays: frozenset[int] | None
    last_weekday_of: frozenset[int]
    nth_weekday: frozenset[tuple[int, int]]


Schedule = Rate | Cron


def parse_schedule(expression: str) -> Schedule:
    """Parse and validate; raises InvalidInput naming what is wrong."""
    text = expression.strip()
    rate = _RATE_RE.match(text)
    if rate:
        return _parse_rate(text, rate.group(1))
    cron = _CRON_RE.match(text)
    if cron:
        return _parse_cron(text, cron.group(1))
    raise InvalidInput(
        f"schedule {expression!r}: use rate(VALUE UNIT) or cron(MIN HOUR DOM MONTH DOW YEAR)"
    )


def _parse_rate(text: str, body: str) -> Rate:
    parts = body.split()
    if len(parts) != 2 or not parts[0].isdigit():
        raise InvalidInput(f"schedule {text!r}: a rate is rate(VALUE UNIT), e.g. rate(5 minutes)")
    value, unit = int(parts[0]), parts[1]
    if value == 0:
        raise InvalidInput(f"schedule {text!r}: the value must be greater than 0")
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise InvalidInput(f"schedule {text!r}: the unit must be minute(s), hour(s) or day(s)")
    if value == 1 and unit != singular:
        raise InvalidInput(f"schedule {text!r}: a value of 1 takes the singular unit {singular!r}")
    if value > 1 and unit == singular:
        raise InvalidInput(
            f"schedule {text!r}: a value above 1 takes the plural unit {unit + 's'!r}"
        )
    return Rate(text, value * _UNITS[singular])


def _parse_cron(text: str, body: str) -> Cron:
    fields = body.split()
    if len(fields) != 6:
        raise InvalidInput(
            f"schedule {text!r}: cron needs 6 fields (minutes hours day-of-month month "
            f"day-of-week year), got {len(fields)}"
        )
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise InvalidInput(
            f"schedule {text!r}: exactly one of day-of-month and day-of-week must be '?'"
        )

    def field(
        name: str, value: str, low: int, high: int, names: dict[str, int] | None = None
    ) -> frozenset[int]:
        return _values(text, name, value, low, high, names or {})

    days: frozenset[int] | None = None
    last_day = last_weekday = False
    nearest: set[int] = set()
    if dom != "?":
        plain: list[str] = []
        for part in dom.split(","):
            if part == "L":
                last_day = True
            elif part == "LW":
                last_weekday = True
            elif re.fullmatch(r"\d+W", part):
                day = int(part[:-1])
                if not 1 <= day <= 31:
                    raise InvalidInput(f"schedule {text!r}: day-of-month {part!r} is out of 1-31")
                nearest.add(day)
            else:
                plain.append(part)
        days = field("day-of-month", ",".join(plain), 1, 31) if plain else frozenset()

    weekdays: frozenset[int] | None = None
    last_of: set[int] = set()
    nth: set[tuple[int, int]] = set()
    if dow != "?":
        plain = []
        for part in dow.split(","):
            if m := re.fullmatch(r"([1-7]|[A-Z]{3})L", part):
                last_of.add(_number(text, "day-of-week", m.group(1), 1, 7, _DAYS))
            elif part == "L":
                last_of.add(7)
            elif m := re.fullmatch(r"([1-7]|[A-Z]{3})#([1-5])", part):
                nth.add((_number(text, "day-of-week", m.group(1), 1, 7, _DAYS), int(m.group(2))))
            elif "#" in part:
                raise InvalidInput(f"schedule {text!r}: day-of-week {part!r}: use DAY#N with N 1-5")
            else:
                plain.append(part)
        weekdays = field("day-of-week", ",".join(plain), 1, 7, _DAYS) if plain else frozenset()

    return Cron(
        expression=text,
        minutes=field("minutes", minute, 0, 59),
        hours=field("hours", hour, 0, 23),
        months=field("month", month, 1, 12, _MONTHS),
        years=field("year", year, YEAR_MIN, YEAR_MAX),
        days=days,
        last_day=last_day,
        last_weekday=last_weekday,
        nearest_weekday=frozenset(nearest),
        weekdays=weekdays,
        last_weekday_of=frozenset(last_of),
        nth_weekday=frozenset(nth),
    )


def _number(text: str, name: str, token: str, low: int, high: int, names: dict[str, int]) -> int:
    if token.upper() in names:
        return names[token.upper()]
    if not token.isdigit():
        raise InvalidInput(f"schedule {text!r}: {name} value {token!r} is not understood")
    value = int(token)
    if not low <= value <= high:
        raise InvalidInput(f"schedule {text!r}: {name} value {value} is out of {low}-{high}")
    return value


def _values(
    text: str, name: str, spec: str, low: int, high: int, names: dict[str, int]
) -> frozenset[int]:
    out: set[int] = set()
    for part in spec.split(","):
        if not part:
            raise InvalidInput(f"schedule {text!r}: {name} has an empty list entry")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidInput(
                    f"schedule {text!r}: {name} step {step_text!r} must be a positive number"
                )
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _number(text, name, first, low, high, names)
            end = _number(text, name, last, low, high, names)
            if start > end:
                raise InvalidInput(f"schedule {text!r}: {name} range {base!r} runs backwards")
        else:
            start = _number(text, name, base, low, high, names)
            end = high if step_text else start
        out.update(range(start, end + 1, step))
    return frozenset(out)


def aws_weekday(day: date) -> int:
    """1 = Sunday ... 7 = Saturday, as in EventBridge cron."""
    return (day.weekday() + 1) % 7 + 1


def _nearest_weekday(year: int, month: int, day: int) -> int | None:
    length = calendar.monthrange(year, month)[1]
    if day > length:
        return None
    weekday = date(year, month, day).weekday()
    if weekday < 5:
        return day
    if weekday == 5:  # Saturday: Friday before, unless that leaves the month.
        return day - 1 if day > 1 else day + 2
    return day + 1 if day < length else day - 2  # Sunday


def _month_days(cron: Cron, year: int, month: int) -> list[int]:
    length = calendar.monthrange(year, month)[1]
    chosen: set[int] = set()
    if cron.days is not None:
        chosen.update(d for d in cron.days if d <= length)
        if cron.last_day:
            chosen.add(length)
        if cron.last_weekday:
            last = length
            while date(year, month, last).weekday() >= 5:
                last -= 1
            chosen.add(last)
        for target in cron.nearest_weekday:
            nearest = _nearest_weekday(year, month, target)
            if nearest is not None:
                chosen.add(nearest)
    if cron.weekdays is not None:
        for day in range(1, length + 1):
            weekday = aws_weekday(date(year, month, day))
            if (
                weekday in cron.weekdays
                or (weekday in cron.last_weekday_of and day + 7 > length)
                or (weekday, (day - 1) // 7 + 1) in cron.nth_weekday
            ):
                chosen.add(day)
    return sorted(chosen)


def _cron_times(cron: Cron, after: datetime) -> Iterator[datetime]:
    for year in sorted(y for y in cron.years if y >= after.year):
        for month in sorted(cron.months):
            if (year, month) < (after.year, after.month):
                continue
            for day in _month_days(cron, year, month):
                if date(year, month, day) < after.date():
                    continue
                for hour in sorted(cron.hours):
                    for minute in sorted(cron.minutes):
                        moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
                        if moment > after:
                            yield moment


def next_fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after` (UTC).

    A rate rule fires every interval from when it is enabled, so its times count from `after`.
    """
    after = after.astimezone(UTC) if after.tzinfo else after.replace(tzinfo=UTC)
    if isinstance(schedule, Rate):
        step = timedelta(seconds=schedule.seconds)
        return [after + step * (i + 1) for i in range(count)]
    out: list[datetime] = []
    for moment in _cron_times(schedule, after):
        out.append(moment)
        if len(out) >= count:
            break
    return out
