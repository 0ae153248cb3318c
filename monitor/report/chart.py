"""The daily report's chart: one PNG for a phone, drawn with matplotlib (Agg) from the `report` object.

Presenting only. Two panels: opportunities per day over the last 14 days with the
7-day median and `min_opportunities` drawn, the reported day's bar labelled with its
count and its change against the median, a day without any opportunity marked (not a
gap); and the reported day hour by hour, the hours labelled in its local clock time
(a DST day has 23 or 25 bars), with the health incidents shaded. Telegram shows the
picture ~330 points wide on a phone, a third of its pixels: the text is drawn at 28 px
and more (9 points there), the legends above the bars, never over them. Dark
background with light text and saturated colours: legible in Telegram's dark and
light themes alike. matplotlib is the optional `chart` extra and is imported here
only, by `daily-report`.
"""

import io
from datetime import datetime, timedelta

WIDTH_PX, HEIGHT_PX, DPI = 1080, 1260, 100
TICK_PX, LABEL_PX, TITLE_PX = 32, 34, 42  # pixels: ~10, 10 and 13 points on a phone
BACKGROUND, TEXT, GRID = "#1b1f24", "#e6edf3", "#3d444d"
BARS, HIGHLIGHT, MEDIAN, MINIMUM, SHADE = "#4493f8", "#f0b72f", "#3fb950", "#f85149", "#f85149"
MINUS = "\u2212"


def _pt(px: float) -> float:
    """Font size in points for `px` pixels of the saved image."""
    return px * 72 / DPI


class ChartUnavailable(Exception):
    """matplotlib is not installed (the `chart` extra)."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ChartUnavailable("matplotlib is not installed (pip install 'monitor[chart]')") from None
    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot

    return pyplot


def render_png(report: dict, min_opportunities: int | None = None) -> bytes:
    """The chart of `report` as PNG bytes. Raise ChartUnavailable without matplotlib."""
    plt = _pyplot()
    figure = draw(report, min_opportunities)
    try:
        out = io.BytesIO()
        figure.savefig(out, format="png", dpi=DPI, facecolor=BACKGROUND)
    finally:
        plt.close(figure)
    return out.getvalue()


def draw(report: dict, min_opportunities: int | None = None):
    """The chart of `report` as a matplotlib Figure, not yet laid out (the caller closes it).

    Every size and colour is set on the artists themselves, so the figure draws the
    same whatever matplotlib's settings when it is saved. Raise ChartUnavailable.
    """
    plt = _pyplot()
    days = report.get("last_days") or []
    hourly = report.get("hourly") or []
    usual = ((report.get("baseline") or {}).get("opportunities") or {})
    with plt.rc_context({"axes.edgecolor": GRID, "axes.facecolor": BACKGROUND, "figure.facecolor": BACKGROUND}):
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI,
                                             layout="constrained", height_ratios=(1.15, 1))
        figure.get_layout_engine().set(h_pad=0.12, hspace=0.06)
        try:
            for ax in (top, bottom):
                ax.tick_params(labelsize=_pt(TICK_PX), colors=TEXT)
            _days_panel(top, days, usual, min_opportunities)
            _hours_panel(bottom, report, hourly)
        except BaseException:
            plt.close(figure)
            raise
    return figure


def _signed(value: float) -> str:
    return ("+" if value >= 0 else MINUS) + f"{abs(value):g}"


def _title(ax, title: str, handles: list) -> None:
    """The panel's title, and its legend in a row between the title and the bars: it never hides one."""
    pad = _pt(TITLE_PX * 0.35)
    if handles:
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(handles), frameon=False,
                  borderaxespad=0.2, borderpad=0, handlelength=1.6, columnspacing=1.2, labelcolor=TEXT,
                  fontsize=_pt(TICK_PX))
        pad += _pt(TICK_PX * 1.6)
    ax.set_title(title, loc="left", fontweight="bold", fontsize=_pt(TITLE_PX), color=TEXT, pad=pad)


def _days_panel(ax, days: list, usual: dict, minimum) -> None:
    from matplotlib.ticker import MaxNLocator

    # "We\n18": two letters of the weekday, so 14 days fit side by side at 32 px.
    labels = [f"{when:%a}"[:2] + f"\n{when:%d}" for when in (datetime.fromisoformat(d["day"]) for d in days)]
    counts = [d["count"] or 0 for d in days]
    colours = [BARS] * len(counts)
    if colours:
        colours[-1] = HIGHLIGHT  # the reported day
    ax.bar(range(len(counts)), counts, color=colours, width=0.75, zorder=2)
    median = usual.get("median_7d")
    top = max(counts + [median or 0, minimum or 0, 1])
    ax.set_ylim(0, top * 1.3)  # room above the tallest bar (and the lines) for the reported day's label
    handles = []
    if median is not None:
        handles.append(ax.axhline(median, color=MEDIAN, linewidth=4, linestyle="--", zorder=3,
                                  label=f"7-day median {median:g}"))
    if minimum:
        handles.append(ax.axhline(minimum, color=MINIMUM, linewidth=3.5, linestyle=":", zorder=3,
                                  label=f"minimum {minimum}"))
    for i, count in enumerate(counts):
        if not count:  # nothing at all that day: a mark, not an empty slot that reads as missing data
            ax.plot(i, top * 0.045, marker="X", markersize=24, color=MINIMUM, markeredgecolor=BACKGROUND,
                    zorder=4)
            ax.annotate("0", (i, top * 0.045), xytext=(0, 12), textcoords="offset points", ha="center",
                        va="bottom", fontsize=_pt(LABEL_PX), fontweight="bold", color=MINIMUM, zorder=4)
    if counts:
        # The reported day's figures in the room kept above the tallest bar, right-aligned over
        # its bar (a label beside it would cover the day before), an arrow down to the bar.
        said = f"{counts[-1]}"
        if usual.get("percent") is not None:
            said += f"\n{_signed(usual['percent'])} %"
        last = len(counts) - 1
        ax.annotate(said, (last, counts[-1]), xytext=(last + 0.45, top * 1.27), textcoords="data",
                    ha="right", va="top", fontsize=_pt(LABEL_PX), fontweight="bold", color=HIGHLIGHT,
                    linespacing=1.1, zorder=5,
                    arrowprops={"arrowstyle": "-|>", "color": HIGHLIGHT, "linewidth": 2.5, "mutation_scale": 22,
                                "shrinkA": 2, "shrinkB": 3, "relpos": (0.85, 0)})
    ax.set_xticks(range(len(counts)), labels)
    ax.set_xlim(-0.6, max(len(counts), 1) - 0.4)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    _title(ax, "Opportunities per day, last 14 days", handles)
    ax.grid(axis="y", color=GRID, linewidth=1)
    ax.set_axisbelow(True)


def hour_ticks(report: dict, hours: int) -> tuple[list[int], list[str]]:
    """Tick positions (hours since the window's start) and their local clock labels.

    A label every three hours of the local clock, at the bar where that hour starts:
    on a 25-hour day the hour 02:00 comes twice and 03:00 is the fifth bar; on a
    23-hour day 02:00 never comes. The window's end is labelled 24.
    """
    start = datetime.fromisoformat(report["window"]["start"])
    tz = _zone(report, start)
    positions, labels, seen = [], [], set()
    for i in range(hours):
        local = (start + timedelta(hours=i)).astimezone(tz)
        if local.minute == 0 and local.hour % 3 == 0 and local.hour not in seen:
            seen.add(local.hour)
            positions.append(i)
            labels.append(f"{local.hour:02d}")
    positions.append(hours)
    labels.append("24")
    return positions, labels


def _zone(report: dict, start: datetime):
    try:
        import zoneinfo

        return zoneinfo.ZoneInfo(report["timezone"])
    except (KeyError, ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):  # the start's own offset then
        return start.tzinfo


def _hours_panel(ax, report: dict, hourly: list) -> None:
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    ax.bar(range(len(hourly)), hourly, color=BARS, width=0.8, align="edge", zorder=2)
    start = datetime.fromisoformat(report["window"]["start"])
    handles = []
    for first, last in (report.get("health") or {}).get("down_spans") or []:
        a = (datetime.fromisoformat(first) - start).total_seconds() / 3600
        b = (datetime.fromisoformat(last) - start).total_seconds() / 3600
        # Over the bars, half see-through, with a solid edge: a five-minute incident still shows.
        ax.axvspan(a, max(b, a + 0.1), facecolor=(*_rgb(SHADE), 0.5), edgecolor=SHADE, linewidth=2.5, zorder=3)
        if not handles:
            handles.append(Patch(facecolor=(*_rgb(SHADE), 0.5), edgecolor=SHADE, linewidth=2.5,
                                 label="health incident"))
    hours = len(hourly)
    ax.set_xlim(0, max(hours, 1))
    ax.set_ylim(0, max(hourly + [1]) * 1.1)
    positions, labels = hour_ticks(report, hours)
    ax.set_xticks(positions, labels)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    _title(ax, f"{report['date']} hour by hour", handles)
    note = {23: ", 23 h: clocks went forward", 25: ", 25 h: clocks went back"}.get(hours, "")
    ax.set_xlabel(f"local time ({report['timezone']}){note}", fontsize=_pt(LABEL_PX), color=TEXT)
    ax.grid(axis="y", color=GRID, linewidth=1)
    ax.set_axisbelow(True)


def _rgb(colour: str) -> tuple[float, float, float]:
    return tuple(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))


def caption(text: str, limit: int = 1024) -> str:
    """The photo's caption: the report's headline (its first lines, plain text) within `limit`."""
    from monitor.alerts.telegram import html_to_plain, units

    lines = [line for line in html_to_plain(text).split("\n") if line.strip()][:4]
    out = ""
    for line in lines:
        candidate = f"{out}\n{line}" if out else line
        if units(candidate) > limit:
            break
        out = candidate
    return out or html_to_plain(text)[: limit // 2]
