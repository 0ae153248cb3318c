"""`monitor daily-report`: the report's window, checks, `report` object and message.

Glue between the CLI and `run_job`: picks the day (DST-aware), builds the business
checks over one `ReportProbe`, and after the run turns what was measured into the
`report` object and the Telegram message, once per day unless `--force`.
"""

import logging
import os
import sys
import time
from datetime import date, datetime
from functools import partial

from monitor.config import ConfigError, section_defaults
from monitor.jobs import Steps, host_name
from monitor.results import OK
from monitor.runner import Check
from monitor.text import printable_tree

DB_TIMEOUT = 60.0
log = logging.getLogger("monitor")


def _report_config(config: dict) -> dict:
    return config.get("report") or section_defaults(config, "report")


def choose_day(text: str | None, tz, now: datetime | None = None) -> date:
    """The day to report: --date, else yesterday in `tz`. Raise ConfigError if bad or not over."""
    from monitor.report.figures import default_day

    now = now or datetime.now().astimezone()
    today = now.astimezone(tz).date()
    if not text:
        return default_day(now, tz)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f'--date: expected YYYY-MM-DD, got "{text}"') from None
    if day >= today:
        raise ConfigError(f"--date: {day} is not over yet in {tz} (today is {today})")
    return day


def _can_send(config: dict) -> bool:
    """Whether notify will send or queue the message: there are chats to send to.

    Without a bot token the message waits in the outbox for the first run that has
    one (notify says so on stderr), so the day counts as reported either way.
    """
    telegram = config.get("telegram")
    return bool(telegram and telegram["chat_ids"])


def daily_steps(config: dict, day_text: str | None, force: bool, opts):
    """Return the `jobs.Steps` of a run: the business checks over one probe, then the report."""
    import zoneinfo

    from monitor.checks import business

    cfg = _report_config(config)
    tz = zoneinfo.ZoneInfo(cfg["timezone"])
    day = choose_day(day_text, tz)
    from monitor.report.figures import window_for

    window = window_for(day, tz)
    sending = _can_send(config) and not (opts.dry_run or opts.no_notify)
    want_chart = bool(opts.chart) or (cfg.get("chart", True) and sending and bool(cfg.get("database")))
    cfg = {**cfg, "hourly": want_chart}  # the day hour by hour: read only for a chart
    base_dir = os.path.dirname(config["source"]) if config["source"] else os.getcwd()
    probe = business.ReportProbe(cfg, config["paths"]["logs"], window, base_dir)

    def build(_carried):
        return [Check("opportunities", "business", partial(business.opportunities, probe), DB_TIMEOUT),
                Check("sources", "business", partial(business.sources, probe), DB_TIMEOUT),
                Check("errors", "business", partial(business.errors, probe), DB_TIMEOUT)]

    def finish(results, carried):
        from monitor.report.text import render

        # Database values and log file names are the outside world's: printable from here on.
        report, missing = printable_tree(probe.report())
        warning = any(r.status != OK for r in results)
        text = render(report, missing, host=host_name(config), environment=config["environment"], warning=warning,
                      min_opportunities=cfg["min_opportunities"] if cfg.get("database") else None,
                      template_path=cfg["template"])
        report["missing"], report["message"] = missing, text
        if opts.chart:  # written, not sent
            report["chart"] = opts.chart if _chart(report, cfg, text, opts.chart) else None
            return {"report": report, "message": None}
        sent = carried.previous.get("sent") if isinstance(carried.previous.get("sent"), dict) else {}
        key = day.isoformat()
        if key in sent and not force:
            report["already_sent"] = datetime.fromtimestamp(sent[key]).astimezone().isoformat(timespec="seconds")
            return {"report": report, "message": None}
        # Drawn only for a report that goes out (matplotlib and the PNG cost ~1 s).
        photo = _chart(report, cfg, text, None) if want_chart else None
        if sending:
            # Keep a month of sent days: enough to refuse a double cron fire or a re-run.
            recent = dict(sorted({**sent, key: time.time()}.items())[-31:])
            carried.save("sent", recent)
        # The report shows its own checks' verdicts (below the minimum, silent sources,
        # errors, what is not available): their alerts are not repeated under it.
        return {"report": report, "message": (text, not warning, [r.id for r in results], photo)}

    return Steps(build, finish)


def _chart(report: dict, cfg: dict, text: str, path: str | None):
    """The chart as (PNG bytes, caption), written to `path` if given; None without matplotlib.

    A report without its chart is still the report: matplotlib missing or failing is
    one WARNING record (and a line on stderr for --chart), never a lost message.
    """
    from monitor.report import chart

    try:
        png = chart.render_png(report, cfg["min_opportunities"] if cfg.get("database") else None)
    except Exception as exc:  # noqa: BLE001 - the text goes without the picture
        reason = str(exc) if isinstance(exc, chart.ChartUnavailable) else f"{type(exc).__name__}: {exc}"
        log.warning("report chart not drawn: %s; the text goes alone", reason, extra={"event": "chart_failed"})
        if path:
            print(f"monitor daily-report: chart not drawn: {reason}", file=sys.stderr)
        return None
    if path:
        try:
            with open(path, "wb") as handle:
                handle.write(png)
        except OSError as exc:
            raise ConfigError(f"--chart: cannot write {path}: {exc.strerror or exc}") from None
    return png, chart.caption(text)
