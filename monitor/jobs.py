"""The shape every command shares: lock, logs, checks, state, outputs, exit code.

`JOBS` holds one `Job` record per command cron runs: its log, lock and carried-state
files, its schedule and how late it may be, and the steps that build its checks.
`run_job` is the one place where a run's side effects happen in order: lock, log
archive, checks, carried state, notifications, Prometheus, log records, stdout. A
failure to write logs, state or the textfile never stops the checks or the alerts;
it is said once on stderr, reported in the JSON as `log_write_error`,
`state_write_error`, `textfile_write_error` (or `notify_error`), and lifts the exit
code to >= 1.
"""

import logging
import os
import sys
import time
from datetime import datetime
from typing import Callable, NamedTuple

from monitor import output, safety, state
from monitor.alerts.notify import notify
from monitor.checks import backup_checks, health_checks
from monitor.config import exposure_warnings
from monitor.fleet import heartbeat
from monitor.logs import archive_if_stale, close_log, open_log
from monitor.redact import clean_url, scrub
from monitor.results import CRITICAL, EXIT_CODES, OK, UNKNOWN, overall
from monitor.runner import run_checks
from monitor.safety import notify_without_state
from monitor.text import printable
from monitor.units import parse_duration

log = logging.getLogger("monitor")

EXIT_UNKNOWN = EXIT_CODES[UNKNOWN]


class Options(NamedTuple):
    """The common options of SPEC, as the CLI parsed them."""

    config: str | None = None
    env: str | None = None
    format: str | None = None
    quiet: bool = False
    no_notify: bool = False
    dry_run: bool = False
    verbose: int = 0
    only: set | None = None
    textfile_dir: str | None = None
    day: str | None = None  # daily-report --date
    force: bool = False  # daily-report --force
    chart: str | None = None  # daily-report --chart FILE: write the chart there, send nothing


class Outcome(NamedTuple):
    exit_code: int


def lock_wait() -> float:
    """How long to wait for another run's lock: 30 s (MONITOR_LOCK_WAIT overrides)."""
    try:
        return float(os.environ.get("MONITOR_LOCK_WAIT", "30"))
    except ValueError:
        return 30.0


class Steps(NamedTuple):
    """What one run does between reading and saving what it carries (`state.Carried`).

    `build(carried)` returns the checks. `finish(results, carried)`, if any, returns
    extras for the outputs: a `report` object for the envelope and Prometheus, and a
    `message` (text, silent) to send before the alerts.
    """

    build: Callable
    finish: Callable | None = None


class Job(NamedTuple):
    """One command cron runs: its files, its schedule, and what it checks.

    `monitor cron` (and so `crontab.example`), the `cron` check and the dead man's
    switch rules (`fleet.rules.STALE_AFTER`) all read these records.
    """

    name: str  # the subcommand; heartbeat, metrics and the envelope name it so
    log_name: str  # logs/<log_name>.log
    lock: str  # state/<lock>.lock: one run at a time; its mtime says when the job last ran
    carried_file: str  # state/<carried_file>: what one run leaves the next
    keep_untouched: bool  # keep carried entries a run did not touch (the backup cache: no)
    cron: str  # the crontab time fields `monitor cron` prints
    grace: int | None  # after a scheduled time, until the `cron` check calls the run missed
    overdue_after: float  # since the last run, until the dead man's switch (Prometheus) fires
    configured: Callable  # configured(config): does the config ask for this job?
    steps: Callable  # steps(config, opts) -> Steps; a bad option is refused before the lock

    @property
    def hours(self) -> tuple[int, ...]:
        """The hours of the day cron starts the job at minute 0, from `cron`: what the
        `cron` check reasons with. Only that shape of schedule is read."""
        minute, hour, *rest = self.cron.split()
        if minute != "0" or rest != ["*", "*", "*"]:
            raise ValueError(f"{self.name}: {self.cron!r} is not minute 0 of some hours of every day")
        if hour.startswith("*/"):
            return tuple(range(0, 24, int(hour[2:])))
        return tuple(sorted(int(h) for h in hour.split(",")))

    @property
    def period(self) -> float:
        """Seconds between two scheduled runs, from `cron` (the longest gap in a day):
        how long an alert it posted to Alertmanager stays firing without news."""
        minute, hour, *_ = self.cron.split()
        if minute.startswith("*/") and hour == "*":
            return 60.0 * int(minute[2:])
        hours = self.hours
        return 3600.0 * max((b - a) % 24 or 24 for a, b in zip(hours, hours[1:] + hours[:1]))


def _health_steps(config: dict, opts: Options) -> Steps:
    return Steps(lambda carried: health_checks(config, carried, opts.only))


def _backup_steps(config: dict, opts: Options) -> Steps:
    return Steps(lambda cache: backup_checks(config, cache))


def _report_steps(config: dict, opts: Options) -> Steps:
    from monitor.report.daily import daily_steps

    return daily_steps(config, opts.day, opts.force, opts)


# health is not judged by the `cron` check it runs (no grace): the dead man's switch watches it.
JOBS = {job.name: job for job in (
    Job("health", "health", "health", "counters.json", True, "*/5 * * * *", None, parse_duration("15m"),
        lambda config: True, _health_steps),
    Job("backup-check", "backup", "backup-check", "backup-verify.json", False, "0 */6 * * *", 30 * 60,
        parse_duration("7h"), lambda config: bool(config["backups"]), _backup_steps),
    Job("daily-report", "report", "daily-report", "report.json", True, "0 9 * * *", 3600,
        parse_duration("25h"), lambda config: bool(config.get("report")), _report_steps),
)}


def run_job(job: Job, opts: Options, config: dict) -> Outcome:
    """Run one command: lock, log, build and run its checks, carry, notify, export, print."""
    steps = job.steps(config, opts)  # a bad --date: a config error, before anything is written
    command = job.name
    started_wall = datetime.now().astimezone()
    t0 = time.perf_counter()
    paths = config["paths"]
    problems: dict[str, str] = {}
    beat = heartbeat.begin(config, command, opts.dry_run)  # URL/start, in a thread

    lock = None
    refused = False  # a root run refuses a state folder others can write (monitor/safety.py)
    try:
        state.ensure_folder(paths["state"])
        lock = state.RunLock(paths["state"], job.lock, lock_wait())
        lock.acquire()
    except state.StateError as exc:
        lock = None
        problems["state_write_error"] = str(exc)
        refused = isinstance(exc, state.FolderRefused)
    except state.LockHeld as exc:
        # Propagates: the CLI reports it and exits 3 before anything is written.
        if beat:
            beat.end(EXIT_UNKNOWN, f"{command} unknown: {exc}")
        raise

    try:
        handler = open_log(paths["logs"], job.log_name, opts.verbose)
        if handler.error:
            problems["log_write_error"] = handler.error
        else:
            try:
                archive_if_stale(paths["logs"], job.log_name, started_wall.date(),
                                 config["logs"]["retention_days"])
            except OSError as exc:
                problems["log_write_error"] = f"cannot archive {exc.filename or paths['logs']}: {exc.strerror or exc}"

        for warning in exposure_warnings(config["source"], config):  # logged, not mailed every 5 min
            log.warning("%s", warning, extra={"event": "config_exposure"})

        carried_path = os.path.join(paths["state"], job.carried_file)
        try:
            previous = {} if refused else state.read_json(carried_path, default={})
        except (state.StateError, OSError) as exc:
            previous = {}
            problems.setdefault("state_write_error", f"cannot read {carried_path}: {exc}")
        carried = state.Carried(previous)

        run = run_checks(steps.build(carried))
        status = overall(run.results)
        extra = steps.finish(run.results, carried) if steps.finish else {}

        saved = carried.to_write(job.keep_untouched)
        if saved is not None and "state_write_error" not in problems:
            try:
                state.write_json(carried_path, saved)
            except OSError as exc:
                problems["state_write_error"] = f"cannot write {carried_path}: {exc.strerror}"

        notifications = _notify(command, opts, config, run.results, problems, extra.get("message"), refused)
        duration_ms = (time.perf_counter() - t0) * 1000
        _export(command, opts, config, run.results, duration_ms, notifications, problems)
        _log_results(command, config, run.results, status, duration_ms)
        if lock and lock.problem:  # the lock held, but its PID file was a planted link or FIFO
            problems.setdefault("state_write_error", lock.problem)
        if handler.error:  # a write failed after the log was opened
            problems.setdefault("log_write_error", handler.error)

        data = output.envelope(command, started_wall, host_name(config), config["environment"], status,
                               duration_ms, run.results,
                               {**({"report": extra["report"]} if "report" in extra else {}),
                                "notifications": notifications, **problems},
                               config=config.get("source"))
        for key, message in problems.items():
            print(f"monitor {command}: {key.replace('_', ' ')}: {printable(message)}", file=sys.stderr)
        _print(data, opts)

        code = EXIT_CODES[status]
        if problems and code == 0:
            code = 1
        if beat:  # after stdout: a slow watcher never holds up the result
            beat.end(code, heartbeat.summary(command, status, run.results, problems))
        return Outcome(code)
    except Exception as exc:
        if beat:  # the traceback that follows exits 1
            beat.end(1, f"{command} failed: {type(exc).__name__}")
        raise
    finally:
        close_log()
        safety.hand_over()  # under the lock: root's files in a service user's folders go to it
        if lock:
            lock.release()


def _notify(command: str, opts: Options, config: dict, results, problems: dict, message=None,
            refused=False) -> dict:
    """Deliver this run's alerts; a notification failure never changes the verdict."""
    if refused:  # nothing read from or written to the refused folder; the alerts still go out
        return notify_without_state(lambda cfg: _notify(command, opts, cfg, results, problems, message),
                                    config)
    try:
        summary = notify(config, command, results, opts.only, host_name(config),
                         no_notify=opts.no_notify, dry_run=opts.dry_run, message=message)
    except state.LockHeld as exc:
        kept = getattr(exc, "pending", None)  # the report, kept for the next run (alerts are told again)
        note = f"; its message waits in {kept} for the next run" if kept else ""
        log.error("notifications skipped: %s%s", exc, note, extra={"event": "notify_lock"})
        problems.setdefault("state_write_error", f"notifications skipped: {exc}{note}")
        return {"sent": 0, "queued": 0, "silenced": 0, "failed": 0, "outbox": None}
    except Exception as exc:  # noqa: BLE001 - a notifier bug must not cost the verdict or the log
        log.exception("notifications failed: %s", scrub(exc), extra={"event": "notify_failed"})
        problems.setdefault("notify_error", scrub(f"{type(exc).__name__}: {exc}"))
        return {"sent": 0, "queued": 0, "silenced": 0, "failed": 0, "outbox": None}
    error = summary.pop("state_error", None)
    if error:
        problems.setdefault("state_write_error", error)
    refused = summary.pop("notify_error", None)  # every Alertmanager replica refused the alerts
    if refused:
        problems.setdefault("notify_error", refused)
    return dict(summary)


def _export(command: str, opts: Options, config: dict, results, duration_ms: float,
            notifications: dict, problems: dict) -> None:
    """Feed Prometheus: the textfile for node_exporter, and the Pushgateway if set."""
    folder = opts.textfile_dir or config["prometheus"]["textfile_dir"]
    gateway = config["prometheus"]["pushgateway_url"]
    if not folder and not gateway:
        return
    from monitor.fleet import metrics as prometheus

    registry = prometheus.build_registry(command, results, time.time(), duration_ms / 1000, notifications)
    if folder:
        try:
            prometheus.write_textfile(folder, command, registry)
        except OSError as exc:
            problems["textfile_write_error"] = f"cannot write monitor_{command}.prom in {folder}: {exc.strerror or exc}"
    if gateway:
        try:
            prometheus.push(gateway, command, host_name(config), registry)
        except Exception as exc:  # noqa: BLE001 - a Pushgateway outage must not fail the run
            log.warning("could not push to the Pushgateway %s: %s", clean_url(gateway), scrub(exc),
                        extra={"event": "pushgateway_failed"})


def _log_results(command, config, results, status, duration_ms) -> None:
    for r in results:
        if r.status == OK:
            continue
        level = logging.ERROR if r.status == CRITICAL else logging.WARNING
        log.log(level, "%s %s: %s", r.id, r.status, r.message,
                extra={"event": "check", "command": command, "check": r.id, "status": r.status,
                       "value": r.value, "unit": r.unit})
    non_ok = sum(r.status != OK for r in results)
    log.info("%s run: %s (%d of %d checks not ok)", command, status, non_ok, len(results),
             extra={"event": "run", "command": command, "overall_status": status,
                    "checks": {r.id: r.status for r in results}, "duration_ms": round(duration_ms, 1),
                    "host": host_name(config), "environment": config["environment"]})


def _print(data: dict, opts: Options) -> None:
    if opts.quiet:
        return
    fmt = opts.format or ("text" if sys.stdout.isatty() else "json")
    if fmt == "json":
        output.write_stdout(output.to_json(data))
        return
    if fmt == "nagios":  # for NRPE and Icinga: the status line and perfdata, nothing else
        from monitor.nagios import to_nagios

        output.write_stdout(to_nagios(data))
        return
    text = output.to_text(data, colour=output.use_colour())
    report = data.get("report") or {}
    if report.get("message"):
        from monitor.alerts.telegram import html_to_plain

        note = f" (already sent {report['already_sent']}; --force sends again)" if report.get("already_sent") else ""
        text += f"\n\n--- report{note} ---\n{html_to_plain(report['message'])}"
    for message in data["notifications"].get("dry_run", []):
        text += f"\n\n--- would send to chat {message['chat_id']} ---\n{message['text']}"
    output.write_stdout(text)


def host_name(config: dict | None = None) -> str:
    """This instance's name: the config's top-level `host`, else the hostname."""
    return (config or {}).get("host") or os.uname().nodename

