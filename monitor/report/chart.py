"""The daily report's chart: one PNG for a phone, drawn with matplotlib (Agg) from the `report` object.

Presenting only. Two panels: opportunities per day over the last 14 days with the
7-day median and `min_opportunities` drawn, and the reported day hour by hour with
the health incidents shaded. Dark background with light text and saturated
colours: legible in Telegram's dark and light themes alike. matplotlib is the
optional `chart` extra and is imported here only, by `daily-report`.
"""

import io
from datetime import datetime

WIDTH_PX, HEIGHT_PX, DPI = 1200, 1000, 100
BACKGROUND, TEXT, GRID = "#1b1f24", "#e6edf3", "#3d444d"
BARS, HIGHLIGHT, MEDIAN, MINIMUM, SHADE = "#4493f8", "#f0b72f", "#3fb950", "#f85149", "#f85149"


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
    days = report.get("last_days") or []
    hourly = report.get("hourly") or []
    usual = ((report.get("baseline") or {}).get("opportunities") or {}).get("median_7d")
    with plt.rc_context({"font.size": 20, "axes.titlesize": 24, "axes.labelsize": 20, "xtick.labelsize": 17,
                         "ytick.labelsize": 18, "legend.fontsize": 17, "text.color": TEXT,
                         "axes.labelcolor": TEXT, "xtick.color": TEXT, "ytick.color": TEXT,
                         "axes.edgecolor": GRID, "axes.facecolor": BACKGROUND, "figure.facecolor": BACKGROUND,
                         "savefig.facecolor": BACKGROUND}):
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
        try:
            _days_panel(top, days, usual, min_opportunities)
            _hours_panel(bottom, report, hourly)
            figure.tight_layout(pad=1.2, h_pad=2.0)
            out = io.BytesIO()
            figure.savefig(out, format="png", dpi=DPI)
        finally:
            plt.close(figure)
    return out.getvalue()


def _days_panel(ax, days: list, usual, minimum) -> None:
    labels = [datetime.fromisoformat(d["day"]).strftime("%a\n%d") for d in days]
    counts = [d["count"] for d in days]
    colours = [BARS] * len(counts)
    if colours:
        colours[-1] = HIGHLIGHT  # the reported day
    ax.bar(range(len(counts)), counts, color=colours, width=0.75)
    if usual is not None:
        ax.axhline(usual, color=MEDIAN, linewidth=3, linestyle="--", label=f"7-day median {usual:g}")
    if minimum:
        ax.axhline(minimum, color=MINIMUM, linewidth=2.5, linestyle=":", label=f"minimum {minimum}")
    ax.set_xticks(range(len(counts)), labels)
    ax.set_title("Opportunities per day, last 14 days", loc="left", fontweight="bold")
    ax.grid(axis="y", color=GRID, linewidth=1)
    ax.set_axisbelow(True)
    if usual is not None or minimum:
        ax.legend(loc="lower left", facecolor=BACKGROUND, edgecolor=GRID, labelcolor=TEXT, framealpha=0.9)


def _hours_panel(ax, report: dict, hourly: list) -> None:
    ax.bar(range(len(hourly)), hourly, color=BARS, width=0.8, align="edge")
    start = datetime.fromisoformat(report["window"]["start"])
    shaded = False
    for first, last in (report.get("health") or {}).get("down_spans") or []:
        a = (datetime.fromisoformat(first) - start).total_seconds() / 3600
        b = (datetime.fromisoformat(last) - start).total_seconds() / 3600
        ax.axvspan(a, max(b, a + 0.1), color=SHADE, alpha=0.3, linewidth=0,
                   label=None if shaded else "health incident")
        shaded = True
    ax.set_xlim(0, max(len(hourly), 1))
    ax.set_xticks(range(0, len(hourly) + 1, 3))
    ax.set_title(f"{report['date']} hour by hour ({report['timezone']})", loc="left", fontweight="bold")
    ax.set_xlabel("hour")
    ax.grid(axis="y", color=GRID, linewidth=1)
    ax.set_axisbelow(True)
    if shaded:
        ax.legend(loc="upper left", facecolor=BACKGROUND, edgecolor=GRID, labelcolor=TEXT)


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
