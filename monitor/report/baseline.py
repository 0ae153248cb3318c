"""What "normal" is, from the days before the report's: medians, and sources learned from them.

Plain maths over `history.history`'s figures (no I/O): the median of the previous 7
days and of the same weekday over the previous 4 weeks (the higher middle value of an
even count, `upper_median`), counting only days with data, for opportunities and average ROI; the sources that produced on most of the
last 7 days and went silent, or fell far below their own median. `checks/business.py`
judges with these; the report and the chart show them.
"""

MIN_DAYS = 3           # fewer days with data: no baseline (said once in the report)
SILENT_AFTER = 5       # a source that produced on at least 5 of the previous 7 days...
SOURCE_DROP = 0.30     # ...or now makes less than 30 % of its own 7-day median


def median(values) -> float | None:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return float(values[middle]) if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def upper_median(values) -> float | None:
    """The median of an odd count, the higher middle value of an even one: with the four
    same weekdays before, a quiet day is excused only when most of them were quiet (two
    half-broken weeks of four do not halve the baseline)."""
    values = sorted(values)
    return float(values[len(values) // 2]) if values else None


def _avg(day: dict) -> float | None:
    return day["roi_sum"] / day["with_roi"] if day.get("roi_read") and day["with_roi"] else None


def baselines(history: dict, count: int, avg_roi: float | None, drop: float | None = None) -> dict:
    """The report's `baseline` object: for opportunities and avg_roi, the 7-day and same-weekday medians.

    Each has `median_7d`, `same_weekday` (None with fewer than 3 days of data),
    `effective`: what the day is judged against (the lower of the two when both are
    known, see `below`; None without a 7-day median), exported as the metrics
    `daily_opportunities_baseline` and `daily_avg_roi_baseline`, and `percent`: the
    reported day against the 7-day median. `enough` is False when the 7 days hold fewer
    than 3 days with data. Given `drop` (report.baseline_drop), opportunities also has
    `weekday_normal`: more than `drop` below the 7-day median, yet not below the same
    weekday's (a quiet Sunday like the Sundays before), so the report names that median.
    """
    days = history["days"]
    recent = [d for d in days[:7] if d["count"]]
    weekdays = [days[i] for i in (6, 13, 20, 27) if i < len(days) and days[i]["count"]]
    out = {"days_with_data": len(recent), "enough": len(recent) >= MIN_DAYS}
    for key, value, pick in (("opportunities", count, lambda d: d["count"]), ("avg_roi", avg_roi, _avg)):
        week = [v for v in map(pick, recent) if v is not None]
        same = [v for v in map(pick, weekdays) if v is not None]
        med = median(week) if len(week) >= MIN_DAYS else None
        entry = {"median_7d": _round(med), "same_weekday": _round(upper_median(same) if len(same) >= MIN_DAYS else None),
                 "percent": None}
        entry["effective"] = effective(entry)
        if med and value is not None:
            entry["percent"] = round(100.0 * (value - med) / med, 1)
        if key == "opportunities" and drop is not None:
            entry["weekday_normal"] = bool(value is not None and entry["median_7d"] and entry["same_weekday"]
                                           and value < (1 - drop) * entry["median_7d"]
                                           and not below(value, entry, drop))
        out[key] = entry
    return out


def _round(value):
    return None if value is None else round(value, 4)


def effective(entry: dict) -> float | None:
    """The median a day is judged against: the lower of the 7-day and same-weekday ones (None
    without a 7-day median). Below `1 - drop` of it is below both, which is what `below` asks."""
    if entry.get("median_7d") is None:
        return None
    return min(m for m in (entry["median_7d"], entry.get("same_weekday")) if m is not None)


def below(value: float, entry: dict, drop: float) -> bool:
    """Whether `value` is more than `drop` (0.4: 40 %) below the 7-day median, and below the
    same-weekday median too when there is one (a quiet Sunday is not unusual for a Sunday):
    below `1 - drop` of the `effective` median."""
    return bool(entry.get("median_7d")) and value < (1 - drop) * effective(entry)


def learned_sources(history: dict, today: dict) -> tuple[list[str], list[dict]]:
    """(silent, dropped): sources that produced on >= 5 of the previous 7 days and not on the
    reported day; sources that produced less than 30 % of their own 7-day median (days
    with data, at least 3 of them)."""
    recent = history.get("sources") or []
    names = sorted({name for day in recent for name in day})
    silent, dropped = [], []
    for name in names:
        made = [day.get(name, 0) for day in recent if day.get(name, 0)]
        now = today.get(name, 0)
        if not now:
            if len(made) >= SILENT_AFTER:
                silent.append(name)
        elif len(made) >= MIN_DAYS:
            med = median(made)
            if now < SOURCE_DROP * med:
                dropped.append({"source": name, "count": now, "median_7d": med})
    return silent, dropped
