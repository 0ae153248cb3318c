"""Business checks of the daily report (kind `business`): opportunities, sources, errors.

`ReportProbe` measures each source of figures once per run (the database, the error
logs, the health logs), whichever check asks first; the checks judge those figures.
The probe keeps what it measured so the job can build the `report` object and the
message from exactly the numbers that were judged.
"""

import threading

from monitor.report import baseline, figures
from monitor.report.text import names
from monitor.text import clip
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Result, Threshold, measured, worst


class ReportProbe:
    def __init__(self, cfg: dict, logs_folder: str, window, base_dir: str = "."):
        self.cfg, self.logs_folder, self.window, self.base_dir = cfg, logs_folder, window, base_dir
        # One lock per source: the error count must not wait behind a slow database,
        # nor the report's health figures behind a query that never returns.
        self._locks = {name: threading.Lock() for name in ("business", "errors", "health")}
        self._done: dict = {}

    def _once(self, name, compute):
        with self._locks[name]:
            if name not in self._done:
                try:
                    self._done[name] = (compute(), None)
                except figures.ReportError as exc:
                    self._done[name] = (None, str(exc))
                except Exception as exc:  # noqa: BLE001 - one broken source must not cost the report
                    self._done[name] = (None, f"{name}: {type(exc).__name__}: {exc}")
            return self._done[name]

    def business(self):
        return self._once("business", lambda: figures.business_figures(self.cfg, self.window, self.base_dir))

    def errors(self):
        return self._once("errors", lambda: figures.count_errors(self.cfg["error_logs"], self.window,
                                                                 own_logs=self.logs_folder))

    def health(self):
        return self._once("health", lambda: figures.health_summary(self.logs_folder, self.window))

    def report(self) -> tuple[dict, list[str]]:
        """The SPEC `report` object, and what could not be measured (one line each)."""
        # Absent: the check is still running past its timeout.
        business, business_error = self._done.get("business", (None, "report.database: no answer in time"))
        errors, errors_error = self._done.get("errors", (None, "report.error_logs: not counted in time"))
        health, health_error = self.health()
        missing = [e for e in (business_error, errors_error, health_error) if e]
        out = {"date": self.window.day.isoformat(), "timezone": str(self.window.start.tzinfo),
               "window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat(),
                          "hours": self.window.hours},
               "opportunities_found": None, "avg_roi": None, "top_opportunities": [],
               "sources_active": None, "inactive_sources": [], "errors": errors, "health": health,
               "change": None}
        if business:
            out.update(opportunities_found=business["opportunities_found"], avg_roi=business["avg_roi"],
                       top_opportunities=business["top_opportunities"],
                       sources_active=len(business["sources"]), sources=business["sources"],
                       inactive_sources=inactive(self.cfg, business),
                       roi_missing=business["roi_missing"],
                       damaged_values=business.get("damaged_values", 0),  # values that were not UTF-8
                       change=figures.change(business, business["previous"]))
            learned, dropped = baseline.learned_sources(business["history"], business["sources"])
            days = business["history"]["days"][:13]
            out.update(baseline=business_baseline(business, self.cfg), learned_silent=learned, dropped_sources=dropped,
                       last_days=[{"day": d["day"], "count": d["count"]} for d in reversed(days)]
                       + [{"day": out["date"], "count": business["opportunities_found"]}])
            if business.get("hourly") is not None:
                out["hourly"] = business["hourly"]
        return out, missing


def business_baseline(business: dict, cfg: dict) -> dict:
    return baseline.baselines(business["history"], business["opportunities_found"], business["avg_roi"],
                              cfg.get("baseline_drop"))


def inactive(cfg: dict, business: dict) -> list[str]:
    return [s for s in cfg["expected_sources"] if s not in business["sources"]]


def opportunities(probe: ReportProbe) -> Result:
    business, error = probe.business()
    if error:
        return Result(UNKNOWN, f"cannot count opportunities: {error}")
    minimum = probe.cfg["min_opportunities"]
    count = business["opportunities_found"]
    base = business_baseline(business, probe.cfg)
    usual = base["opportunities"]
    # Unusual: further below the 7-day median (and the same weekday's) than baseline_drop.
    status = OK
    if baseline.below(count, usual, probe.cfg["baseline_critical"]):
        status = CRITICAL
    elif baseline.below(count, usual, probe.cfg["baseline_drop"]):
        status = WARNING
    said = ""
    if usual["median_7d"]:
        weekday = f"; same weekday {usual['same_weekday']:g}" if usual.get("weekday_normal") else ""
        said = f" (7-day median {usual['median_7d']:g}, {usual['percent']:+g} %{weekday})"
    return measured(count, Threshold(minimum - 1, -1, lower_is_worse=True) if minimum else Threshold(-1, -1, True),
                    f"{count} opportunities on {probe.window.day}" + (f" (fewer than {minimum})" if count < minimum else "")
                    + said, unit="", worst_of=status,
                    details={"minimum": minimum, "avg_roi": business["avg_roi"],
                             # What is judged against (and exported, so the rule agrees): the lower median.
                             "baseline": usual["effective"], "avg_roi_baseline": base["avg_roi"]["effective"],
                             "median_7d": usual["median_7d"], "same_weekday": usual["same_weekday"],
                             "percent": usual["percent"]})


MAX_NAMES = 100  # source names a check's details keep (its message shows ten)


def sources(probe: ReportProbe) -> Result:
    business, error = probe.business()
    if error:
        return Result(UNKNOWN, f"cannot list sources: {error}")
    silent = inactive(probe.cfg, business)
    learned, dropped = baseline.learned_sources(business["history"], business["sources"])
    quiet = silent + [name for name in learned if name not in silent]
    active = len(business["sources"])
    # Names read from the database (learned, dropped): as the report's text shows them, ten at most, clipped.
    message = f"{active} source(s) active" + (f"; silent: {names(quiet)}" if quiet else "")
    if dropped:
        message += "; far below their 7-day median: " + names(
            f"{clip(d['source'], 40)} ({d['count']} vs {d['median_7d']:g})" for d in dropped)
    return Result(WARNING if quiet or dropped else OK, message, value=active, unit="",
                  details={"active": sorted(business["sources"]), "inactive": silent,
                           "learned_silent": learned[:MAX_NAMES], "dropped": dropped[:MAX_NAMES]})


def errors(probe: ReportProbe) -> Result:
    found, error = probe.errors()
    if error:
        return Result(UNKNOWN, f"cannot count errors: {error}")
    # A warning, never critical: the scraper's own CRITICAL lines are its business to
    # page about; the report says how many there were.
    status = WARNING if found["count"] else OK
    message = f"{found['count']} ERROR/CRITICAL record(s) logged on {probe.window.day}"
    if found["unparseable_lines"]:
        message += f" ({found['unparseable_lines']} unparseable line(s))"
    if found["unreadable"]:  # a corrupt archive: the count may be short, say so
        status = worst(status, WARNING)
        message += f"; unreadable: {'; '.join(found['unreadable'])}"
    return Result(status, message, value=found["count"], unit="", details=found)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "daily_opportunities_count": ("Opportunities found during the reported day.", ()),
    "daily_avg_roi": ("Average ROI of the opportunities of the reported day.", ()),
    "daily_sources_active": ("Distinct sources with opportunities during the reported day.", ()),
    "daily_errors_count": ("ERROR and CRITICAL log records during the reported day.", ()),
    "daily_opportunities_baseline": ("Opportunities per day the reported one is judged against: the lower of "
                                     "the median of the 7 days before and the same weekday's over 4 weeks "
                                     "(days with data; absent with fewer than 3 of the 7).", ()),
    "daily_avg_roi_baseline": ("Average ROI the reported day is judged against: the lower of the median of the "
                               "7 days before and the same weekday's over 4 weeks (days with data; absent with "
                               "fewer than 3 of the 7).", ()),
}
# Judged as "at most minimum - 1": the headline says "below the minimum" (3 < 5).
MEASURES = {"opportunities": ("opportunities", True, "minimum")}


def check_ids(config: dict) -> list[str]:
    return ["opportunities", "sources", "errors"] if config.get("report") else []


def samples(result) -> list:
    if result.id == "opportunities":
        details = result.details or {}
        return [("daily_opportunities_count", {}, result.value),
                ("daily_avg_roi", {}, details.get("avg_roi")),
                ("daily_opportunities_baseline", {}, details.get("baseline")),
                ("daily_avg_roi_baseline", {}, details.get("avg_roi_baseline"))]
    if result.id == "sources":
        return [("daily_sources_active", {}, result.value)]
    if result.id == "errors":
        return [("daily_errors_count", {}, result.value)]
    return []


def levels(config: dict) -> dict:
    from monitor.fleet.kit import schema_default

    report = config.get("report") or {}
    return {key: report.get(key, schema_default("report", key))
            for key in ("min_opportunities", "baseline_drop", "baseline_critical")}


def rules(t: dict) -> dict:
    from monitor.fleet.kit import HOST, num, rule

    runbook = f"ssh {HOST} monitor daily-report --format text --no-notify"
    seed = {"alert": "LowOpportunityCount", "expr": f"daily_opportunities_count < {num(t['min_opportunities'])}",
            "for": "10m", "labels": {"severity": "warning"},
            "annotations": {"summary": "Fewer opportunities than expected",
                            "description": "{{ $labels.instance }} found {{ $value }} opportunities during the "
                                           f"reported day (report.min_opportunities = {num(t['min_opportunities'])}).",
                            "runbook": runbook}}
    return {"web3_scraper_alerts": [seed], "monitor_business": [
        rule("ScraperErrorsLogged", "daily_errors_count > 0", "10m", "warning",
             "The scraper logged errors yesterday",
             "{{ $value }} ERROR/CRITICAL log record(s) on {{ $labels.instance }} during the reported day.",
             runbook),
        # The baseline exported is the one the check judges against (the lower of the 7-day and
        # same-weekday medians): rule and check agree, a usual quiet weekend day fires neither.
        rule("OpportunitiesBelowBaseline",
             f"daily_opportunities_count < {num(round(1 - t['baseline_drop'], 4))} * daily_opportunities_baseline",
             "10m", "warning", "Fewer opportunities than usual",
             "{{ $labels.instance }} found {{ $value }} opportunities during the reported day, more than "
             f"{num(round(100 * t['baseline_drop'], 2))} % below its baseline, the lower of the median of the "
             "7 days before and the same weekday's (report.baseline_drop).", runbook),
        rule("ExpectedSourcesSilent", 'monitor_check_status{kind="business",check="sources"} == 1', "10m", "warning",
             "Sources went silent or far below usual yesterday",
             "On {{ $labels.instance }} a source of report.expected_sources, or one that produced on 5 of the 7 "
             "days before, had no opportunity during the reported day, or one made less than 30 % of its "
             "7-day median (status {{ $value }}).", runbook),
    ]}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, num, panel, steps, target

    row, minimum = "Business Metrics", t["min_opportunities"]
    return [
        (row, panel("stat", "Opportunities (reported day)", [target(f"daily_opportunities_count{{{I}}}")],
                    "Fewer than report.min_opportunities is a warning.", "none",
                    steps("yellow", (minimum, "green"))), 6, 8),
        (row, panel("timeseries", "Opportunities per day", [target(f"daily_opportunities_count{{{I}}}")],
                    "", "none", steps("yellow", (minimum, "green")), 0,
                    custom={"drawStyle": "bars", "fillOpacity": 60}), 6, 8),
        (row, panel("timeseries", "Opportunities vs baseline",
                    [target(f"daily_opportunities_count{{{I}}}", "{{instance}} count"),
                     target(f"daily_opportunities_baseline{{{I}}}", "{{instance}} baseline", "B")],
                    "The reported day's count against its baseline: the lower of the median of the 7 days "
                    f"before it and the same weekday's; {num(round(100 * t['baseline_drop'], 2))} % below it "
                    "is a warning.", "none"), 6, 8),
        (row, panel("timeseries", "Average ROI", [target(f"daily_avg_roi{{{I}}}")],
                    "Average ROI of the reported day's opportunities.", "none"), 4, 8),
        (row, panel("stat", "Active sources", [target(f"daily_sources_active{{{I}}}")],
                    "Distinct sources with opportunities during the reported day.", "none"), 4, 8),
        (row, panel("stat", "Errors logged", [target(f"daily_errors_count{{{I}}}")],
                    "ERROR and CRITICAL records during the reported day.", "none",
                    steps("green", (1, "yellow"))), 4, 8),
    ]
