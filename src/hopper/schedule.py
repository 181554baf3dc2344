"""EventBridge Scheduler expressions: `rate(...)`, six-field `cron(...)` and one-time `at(...)`,
validated locally, and their fire times in a time zone.

The rules are AWS's (EventBridge Scheduler "Schedule types"): a rate's unit is singular for 1
and plural otherwise, and 0 is refused; cron has six fields, Minutes Hours Day-of-month Month
Day-of-week Year, with days of the week numbered 1 (SUN) to 7 (SAT), and exactly one of
Day-of-month and Day-of-week set to `?`. Day-of-month takes `L`, `LW` and `nW`; Day-of-week
takes `nL` and `n#k`. `at(yyyy-mm-ddThh:mm:ss)` fires once.

cron and at() read the wall clock of the schedule's time zone (UTC unless given). Across
daylight-saving changes Scheduler skips a time that does not exist (spring forward) and fires
a repeated time once, at its first occurrence (fall back); a rate counts real time, so
`rate(1 day)` is 24 hours even across a change.

croniter is deliberately not used: its sixth field is seconds and its weekdays start at 0.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hopper.errors import InvalidInput

_RATE_RE = re.compile(r"^rate\((.*)\)$")
_CRON_RE = re.compile(r"^cron\((.*)\)$")
_AT_RE = re.compile(r"^at\((.*)\)$")
_AT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
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


@dataclass(frozen=True)
class At:
    expression: str
    # The wall-clock moment, in the schedule's time zone.
    moment: datetime


Schedule = Rate | Cron | At


def parse_schedule(expression: str) -> Schedule:
    """Parse and validate; raises InvalidInput naming what is wrong."""
    text = expression.strip()
    rate = _RATE_RE.match(text)
    if rate:
        return _parse_rate(text, rate.group(1))
    cron = _CRON_RE.match(text)
    if cron:
        return _parse_cron(text, cron.group(1))
    at = _AT_RE.match(text)
    if at:
        return _parse_at(text, at.group(1))
    raise InvalidInput(
        f"schedule {expression!r}: use rate(VALUE UNIT), cron(MIN HOUR DOM MONTH DOW YEAR) "
        "or at(YYYY-MM-DDTHH:MM:SS)"
    )


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA time zone (`Europe/Berlin`, `UTC`), as Scheduler's ScheduleExpressionTimezone
    takes it; raises InvalidInput for any other text."""
    text = name.strip()
    bad = InvalidInput(
        f"time zone {name!r} is not an IANA time zone name",
        hint="use a name such as Europe/Berlin, America/New_York or UTC",
    )
    # A path would be read as a file, not looked up as a name.
    if not text or text.startswith(("/", ".")) or ".." in text:
        raise bad
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad from None


def _parse_at(text: str, body: str) -> At:
    if not _AT_TIME.match(body.strip()):
        raise InvalidInput(f"schedule {text!r}: a one-time schedule is at(YYYY-MM-DDTHH:MM:SS)")
    try:
        moment = datetime.fromisoformat(body.strip())
    except ValueError:
        raise InvalidInput(f"schedule {text!r}: {body.strip()!r} is not a date and time") from None
    return At(text, moment)


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


def _wall_clock(cron: Cron, start: date) -> Iterator[datetime]:
    """The expression's wall-clock times (naive) from the first minute of `start`, in order."""
    for year in sorted(y for y in cron.years if y >= start.year):
        for month in sorted(cron.months):
            if (year, month) < (start.year, start.month):
                continue
            for day in _month_days(cron, year, month):
                if date(year, month, day) < start:
                    continue
                for hour in sorted(cron.hours):
                    for minute in sorted(cron.minutes):
                        yield datetime(year, month, day, hour, minute)


def _in_zone(wall: datetime, zone: tzinfo) -> datetime | None:
    """The UTC moment of a wall-clock time in `zone`, as Scheduler resolves it: None for a time
    the spring-forward change skips, the first occurrence of one the fall-back change repeats."""
    moment = wall.replace(tzinfo=zone, fold=0)
    if moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return moment.astimezone(UTC)


def next_fire_times(
    schedule: Schedule, after: datetime, count: int, zone: tzinfo | None = None
) -> list[datetime]:
    """The next `count` fire times strictly after `after`, in UTC, of a schedule whose cron or
    at() reads the wall clock of `zone` (UTC when None).

    A rate fires every interval from when it is enabled, so its times count from `after`.
    """
    zone = zone or UTC
    after = after.astimezone(UTC) if after.tzinfo else after.replace(tzinfo=UTC)
    if isinstance(schedule, Rate):
        step = timedelta(seconds=schedule.seconds)
        return [after + step * (i + 1) for i in range(count)]
    if isinstance(schedule, At):
        moment = _in_zone(schedule.moment, zone)
        if moment is None:
            raise InvalidInput(
                f"schedule {schedule.expression!r}: {schedule.moment.isoformat()} does not "
                f"exist in {zone}, whose clocks skip that hour"
            )
        return [moment] if moment > after and count > 0 else []
    out: list[datetime] = []
    # A day early: the wall clock of `after` in `zone` may be a day behind its UTC date.
    start = after.astimezone(zone).date() - timedelta(days=1)
    for wall in _wall_clock(schedule, start):
        moment = _in_zone(wall, zone)
        if moment is None or moment <= after:
            continue
        out.append(moment)
        if len(out) >= count:
            break
    return out
