"""When a recurring line's next generation is due: monthly, weekly, yearly or a cron-like rule.

The cron-like rule works on dates only (lines are charged per day): the three date fields of a
crontab line, `day-of-month month day-of-week`, each `*`, `n`, `a-b`, `*/s`, `a-b/s` or a comma
list of those; a five-field crontab line is accepted and its minute and hour are ignored. As in
cron, when both day-of-month and day-of-week are restricted a day matching either one is due.
"""

import calendar
from datetime import date, timedelta

# Far enough for any rule that matches at all (e.g. only 29 February falling on a Monday).
_SEARCH_DAYS = 366 * 29

_FIELDS = (("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


class ScheduleError(ValueError):
    """A cron-like rule that cannot be read; the message says what is wrong."""


def _field(text: str, name: str, low: int, high: int) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                start_text, end_text = body.split("-", 1)
                start, end = int(start_text), int(end_text)
            else:
                start = end = int(body)
        except ValueError:
            raise ScheduleError(f"The {name} field “{text}” is not a cron field.") from None
        if step < 1 or not (low <= start <= end <= high):
            raise ScheduleError(f"The {name} field “{text}” must lie between {low} and {high}.")
        values.update(range(start, end + 1, step))
    return frozenset(values), text != "*"


def cron_parse(expression: str):
    """The rule as (days, months, weekdays, days_restricted, weekdays_restricted)."""
    parts = expression.split()
    if len(parts) == 5:
        parts = parts[2:]
    if len(parts) != 3:
        raise ScheduleError(
            "Write the rule as 'day-of-month month day-of-week', e.g. '1 * *' for the first of "
            "every month or '* * 1' for every Monday."
        )
    (days, days_set), (months, _), (weekdays, weekdays_set) = (
        _field(text, *spec) for text, spec in zip(parts, _FIELDS, strict=True)
    )
    weekdays = frozenset(7 if d == 0 else d for d in weekdays)  # cron's Sunday is 0 or 7
    return days, months, weekdays, days_set, weekdays_set


def _cron_matches(day: date, rule) -> bool:
    days, months, weekdays, days_set, weekdays_set = rule
    if day.month not in months:
        return False
    dom, dow = day.day in days, day.isoweekday() in weekdays
    if days_set and weekdays_set:
        return dom or dow
    return dom and dow


def _add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def next_charge_date(after: date, *, interval: str, cron: str = "") -> date:
    """The first charge date of the rule strictly after `after`."""
    if interval == "weekly":
        return after + timedelta(days=7)
    if interval == "yearly":
        return _add_months(after, 12)
    if interval == "cron":
        rule = cron_parse(cron)
        day = after
        for _ in range(_SEARCH_DAYS):
            day += timedelta(days=1)
            if _cron_matches(day, rule):
                return day
        raise ScheduleError("This rule matches no day at all.")
    return _add_months(after, 1)
