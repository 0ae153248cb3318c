"""The report's day: the window it covers, and times read in the report's zone.

Shared by the database figures (`database.py`) and the log scans (`logs.py`): both
count what falls inside [start, end) of one calendar day, DST days included.
"""

from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import NamedTuple


class ReportError(Exception):
    """The data source cannot be used: one clear line naming what is wrong."""


class Window(NamedTuple):
    day: date
    start: datetime  # aware, in the report's time zone
    end: datetime

    @property
    def hours(self) -> float:
        # Aware datetimes sharing one tzinfo subtract as wall-clock times (always 24 h):
        # the instants must be compared, so a DST day is 23 or 25 hours.
        return (self.end.timestamp() - self.start.timestamp()) / 3600


def window_for(day: date, tz) -> Window:
    """The calendar day `day` in `tz`, from midnight to midnight (DST-aware)."""
    start = datetime.combine(day, dtime(0), tz)
    end = datetime.combine(day + timedelta(days=1), dtime(0), tz)
    # Normalise through UTC so a DST day really is 23 or 25 hours long.
    return Window(day, start.astimezone(timezone.utc).astimezone(tz), end.astimezone(timezone.utc).astimezone(tz))


def default_day(now: datetime, tz) -> date:
    return now.astimezone(tz).date() - timedelta(days=1)


def parse_time(text, tz) -> datetime | None:
    """An aware datetime from ISO 8601 text (naive: in `tz`) or epoch seconds/milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        try:
            seconds = text / 1000 if abs(text) > 1e11 else text  # pino and Go loggers write milliseconds
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(text).strip().replace(",", ".")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=tz)
