"""Fill and exhaustion ETAs: a bounded series of (time, used, total) and its least-squares trend.

Pure arithmetic for the disk, inode and quota checks: times come in as arguments, nothing
here reads a clock, a file or the state. A check keeps one series per check id in what
health carries (`state.Carried`), appends a point each run (`append`), and asks `estimate`
when 100 % of `total` will be reached at the rate of the last `window`.
"""

from monitor.results import is_number
from monitor.units import format_duration

KEEP_SECONDS = 48 * 3600  # no point older than this is kept
MAX_POINTS = 80           # about 3 KB of JSON per series, whatever the run rate
# A drop of more than this share of the total is a deletion (or a quota reset), not noise:
# the old points describe another trend, so the series starts again.
JUMP = 0.01
# A total that moves by no more than this share is the same filesystem or quota: used +
# available wobbles on ZFS and btrfs, and XFS reports fewer inodes as blocks fill.
TOTAL_DRIFT = 0.01
MIN_SAMPLES = 4
PREFIX = "eta:"  # the series' keys in what health carries: eta:<check id>


class Settings:
    """How much of a series the trend is read from (`system.eta_window`, `eta_min_span`)."""

    __slots__ = ("window", "min_span", "min_samples")

    def __init__(self, window: float = 6 * 3600, min_span: float = 30 * 60, min_samples: int = MIN_SAMPLES):
        self.window, self.min_span, self.min_samples = window, min_span, min_samples


def settings_of(config: dict) -> Settings:
    """The ETA settings of a validated config (`system.eta_window`, `system.eta_min_span`)."""
    return Settings(config["system"]["eta_window"], config["system"]["eta_min_span"])


class Estimate:
    """When the series reaches its total: `seconds` (None: not growing, or not enough data),
    the fitted `rate` (units per second), the `span` and count of the `samples` it was read
    from, and `note`, a phrase saying how it was reached or why there is none.

    Plain classes, not NamedTuples: a cold health run imports this module, and building a
    NamedTuple class costs a few hundred microseconds.
    """

    __slots__ = ("seconds", "rate", "span", "samples", "note")

    def __init__(self, seconds: float | None, rate: float | None, span: float, samples: int, note: str):
        self.seconds, self.rate, self.span, self.samples, self.note = seconds, rate, span, samples, note


def points_of(saved) -> list[list[float]]:
    """The points in a saved series, oldest first; anything that is not [t, used, total] numbers goes."""
    if not isinstance(saved, list):
        return []
    points = [list(p) for p in saved[-(MAX_POINTS + 1):]
              if isinstance(p, list) and len(p) == 3 and all(map(is_number, p)) and p[2] > 0]
    points.sort(key=lambda p: p[0])
    return points


def append(points: list, now: float, used: float, total: float) -> tuple[list, str]:
    """Given the series, add (now, used, total); return the series to keep and why it restarted ("" if not).

    It restarts when the total moved by more than TOTAL_DRIFT of itself (a resized
    filesystem, a new quota limit), when `used` fell by more than JUMP of the total (files
    deleted, a quota reset), or when the clock went back past its newest point. Points older than KEEP_SECONDS go; past
    MAX_POINTS the oldest are thinned (`thin`).
    """
    why = ""
    if points:
        last = points[-1]
        if abs(total - last[2]) > TOTAL_DRIFT * last[2]:
            why = "the total changed"
        elif used < last[1] - JUMP * total:
            why = "usage dropped"
        elif last[0] >= now:
            why = "the clock went back"
    kept = [] if why else [p for p in points if now - p[0] <= KEEP_SECONDS]
    kept.append([now, used, total])
    return thin(kept, now), why


def thin(points: list, now: float, max_points: int = MAX_POINTS) -> list:
    """Drop points until `max_points` remain, keeping the spacing roughly proportional to age.

    Each time the point whose removal leaves the smallest gap relative to its age goes:
    the last hour stays at the run rate, a day ago a point every half hour or so. The
    newest and oldest points are kept.
    """
    points = list(points)
    while len(points) > max_points:
        best, index = None, 1
        for i in range(1, len(points) - 1):
            score = (points[i + 1][0] - points[i - 1][0]) / (now - points[i + 1][0] + 60.0)
            if best is None or score < best:
                best, index = score, i
        del points[index]
    return points


def slope(points: list) -> float:
    """Least-squares slope of used over time (units per second); 0 when time does not vary."""
    n = len(points)
    mean_t = sum(p[0] for p in points) / n
    mean_u = sum(p[1] for p in points) / n
    var = sum((p[0] - mean_t) ** 2 for p in points)
    if var <= 0:
        return 0.0
    return sum((p[0] - mean_t) * (p[1] - mean_u) for p in points) / var


def estimate(points: list, now: float, settings: Settings, show_rate=lambda rate: f"{rate:g}/s",
             verb: str = "full") -> Estimate:
    """Given a series (newest last), return when used reaches total at the rate of the last window.

    Needs at least `min_samples` points spanning `min_span` inside `window`; `show_rate`
    words a rate (units per second) for the note, `verb` what 100 % is ("full", "exhausted").
    """
    recent = [p for p in points if now - settings.window <= p[0] <= now]
    span = recent[-1][0] - recent[0][0] if recent else 0.0
    if len(recent) < settings.min_samples or span < settings.min_span:
        return Estimate(None, None, span, len(recent),
                        f"no trend yet: {len(recent)} sample(s) over {format_duration(span)}, "
                        f"needs {settings.min_samples} over {format_duration(settings.min_span)}")
    rate = slope(recent)
    _, used, total = recent[-1]
    over = f"over {format_duration(span)}"
    if used >= total:
        return Estimate(0.0, rate, span, len(recent), f"already {verb}, at {show_rate(rate)} {over}")
    if rate <= 0:
        return Estimate(None, rate, span, len(recent), f"not growing ({show_rate(rate)} {over})")
    return Estimate((total - used) / rate, rate, span, len(recent), f"at {show_rate(rate)} {over}")


def when(seconds: float) -> str:
    """An ETA as people say it: "in ~5h10m", "in ~3d4h", "now"."""
    return "now" if seconds < 1 else f"in ~{format_duration(seconds)}"


def told(found: Estimate, verb: str = "full") -> str:
    """An estimate with a time, for a message: "full in ~5h10m (at 2 GiB/h over 2h)"; once
    there, its note alone: "already full, at 2 GiB/h over 2h" (`verb` as given to `estimate`)."""
    if found.seconds < 1:
        return found.note
    return f"{verb} {when(found.seconds)} ({found.note})"


def drop_stale(previous: dict, now: float) -> list[str]:
    """Remove from `previous` (what the last run carried) each series whose newest point is
    older than KEEP_SECONDS: a disk or quota no longer configured, whose points the next
    `append` would discard anyway. Return the keys dropped."""
    stale = []
    for key, saved in previous.items():
        if key.startswith(PREFIX):
            points = points_of(saved)
            if not points or now - points[-1][0] > KEEP_SECONDS:
                stale.append(key)
    for key in stale:
        del previous[key]
    return stale
