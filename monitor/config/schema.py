"""The schema: every key the config file may hold, its type, default and one-line help.

The sample config is written from this table (`monitor config example`, help as
comments, `example=` values as sample entries), so a key added here is documented
there; tests/test_config.py fails when the committed monitor.example.toml drifts.
"""

import re

from monitor.config.fields import (Bool, ChatId, DurationField, Field, ListOf, MapOf, Number, PathField,
                                   Regex, SecretRef, SizeField, Str, Table, TableList, ThresholdField,
                                   Url, UserField)
from monitor.text import clip

DEFAULT_ENVIRONMENT = "prod"

# A profile name reaches crontab lines (`monitor cron`), messages and rendered rules: no
# spaces, quotes, `;`, `%` or line breaks.
PROFILE_NAME = r"[A-Za-z0-9_.-]+"
PROFILE_HINT = "letters, digits, _ . and - only"


# --- cross-field rules ---------------------------------------------------------------

def _need_one(*keys, what):
    def check(table, path, ctx):
        if not any(table.get(k) not in (None, "") for k in keys):
            ctx.errors.append(f"{path}: {what}: set one of {', '.join(keys)}")
    return check


def _quota_rules(table, path, ctx):
    _need_one("remaining_header", "remaining_json", what="no remaining quota source")(table, path, ctx)
    _need_one("limit_header", "limit_json", "limit", what="no quota limit source")(table, path, ctx)


ETA_KEEP_SECONDS = 48 * 3600  # monitor.eta.KEEP_SECONDS, not imported by every command's config


def _eta_rules(table, path, ctx):
    """An ETA window longer than the series is kept, or a minimum span no window can hold."""
    from monitor.units import format_duration

    window, span = table.get("eta_window"), table.get("eta_min_span")
    if isinstance(window, (int, float)) and window > ETA_KEEP_SECONDS:
        ctx.errors.append(f"{path}.eta_window: at most {ETA_KEEP_SECONDS // 3600}h (the series keeps no older "
                          f"point), got {format_duration(window)}")
    elif isinstance(window, (int, float)) and isinstance(span, (int, float)) and span >= window:
        ctx.errors.append(f"{path}.eta_min_span: must be shorter than eta_window ({format_duration(window)}), "
                          f"got {format_duration(span)}: no ETA could ever be given")


def check_timezone(config, errors):
    report = config.get("report")
    if not report or not report.get("timezone"):
        return
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(report["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder
        errors.append(f'report.timezone: unknown time zone "{report["timezone"]}"')


def check_baselines(config, errors):
    """report.baseline_critical is the deeper drop: below baseline_drop it could never be reached."""
    report = config.get("report")
    if report and None not in (report.get("baseline_drop"), report.get("baseline_critical")) \
            and report["baseline_critical"] < report["baseline_drop"]:
        errors.append(f"report.baseline_critical: {report['baseline_critical']:g} is below report.baseline_drop "
                      f"({report['baseline_drop']:g}); critical is the deeper drop")


class JsonMetrics(Field):
    """`{ "dotted.path" = { warning = W, critical = C, lower_is_worse = false } }` -> {path: Threshold}.

    Paths are letters, digits, _ and - between dots: they become Prometheus label values
    and rule selectors with nothing to escape.
    """

    PATH = r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*"  # compiled when a config has json_metrics
    MAX_FIELDS, MAX_PATH = 50, 200

    def __init__(self, **doc):
        super().__init__({}, **doc)

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.fail(path, ctx, f"expected a table of dotted paths, got {type(value).__name__}")
        if len(value) > self.MAX_FIELDS:
            return self.fail(path, ctx, f"at most {self.MAX_FIELDS} fields, got {len(value)}")
        out, bad = {}, False
        for key, item in value.items():
            where = f'{path}."{clip(key, self.MAX_PATH)}"'
            if len(key) > self.MAX_PATH or not re.fullmatch(self.PATH, key):
                self.fail(where, ctx, 'expected a dotted path of letters, digits, _ and - (like "stats.error_rate")')
                bad = True
                continue
            if not isinstance(item, dict):
                self.fail(where, ctx, "expected a table like { warning = ..., critical = ... }")
                bad = True
                continue
            lower = item.get("lower_is_worse", False)
            if not isinstance(lower, bool):
                self.fail(f"{where}.lower_is_worse", ctx, "expected true or false")
                bad = True
                continue
            levels = {k: v for k, v in item.items() if k != "lower_is_worse"}
            unknown = sorted(set(levels) - {"warning", "critical"})
            for name in unknown:
                self.fail(f"{where}.{clip(name)}", ctx, "unknown key (expected warning, critical or lower_is_worse)")
            threshold = None if unknown else ThresholdField(0, 0, lower, minimum=None).parse(levels, where, ctx)
            bad = bad or threshold is None
            out[key] = threshold
        return None if bad else out


# --- the schema ---------------------------------------------------------------------

def _percent(warning, critical, lower_is_worse=False, **doc):
    return ThresholdField(warning, critical, lower_is_worse, maximum=100, **doc)


def _optional(field):
    """A threshold with no default: judged only when set."""
    field.default = None
    return field


def _name(kind):
    return Str(required=True, pattern=r"[A-Za-z0-9_.-]+", hint="letters, digits, _ . -",
               help=f"Names the check {kind}:NAME (letters, digits, _ . -).")


def _tls_expiry(what="the https url"):
    return ThresholdField("14d", "3d", lower_is_worse=True, durations=True,
                          help=f"Time left on the certificate of {what} (check tls:HOST:PORT); lower is "
                               "worse. A certificate several entries use is judged by the strictest.")


_ETHERSCAN_NOTE = (
    "A key in the query string: Etherscan's \"Get API Usage\". ${NAME} is filled from the "
    "environment at run time and masked in every output; a literal value for apikey, api_key, "
    "key, token, access_token, password, secret or sig, or a user:password@ in any URL, is "
    "refused. config check shows this URL as written.")

SCHEMA = Table({
    "environment": Str(DEFAULT_ENVIRONMENT, pattern=PROFILE_NAME, hint="a profile name",
                       help="The profile used when neither --env nor MONITOR_ENV names one."),
    "host": Str("", pattern=r"[A-Za-z0-9_.:@-]{1,64}", hint="letters, digits, _ . : @ - (at most 64)",
                help="This instance's name in alerts, Alertmanager's instance label and the "
                     "Pushgateway grouping; empty: the hostname."),
    "paths": Table({
        "logs": PathField("logs", allow_empty=False,
                          help="JSON logs: health.log, backup.log, report.log, and archive/ for older days."),
        "state": PathField("state", allow_empty=False,
                           help="Alert state, outbox, silences, locks and the counters carried between runs."),
    }, help="Where monitor keeps its files. Run as root, monitor refuses a folder its group or "
            "others can write (or below one others can write); it creates them for the config "
            "file's owner (else the folder above's owner). README: \"Running as root and as a "
            "service user\"."),
    "system": Table({
        "cpu_percent": _percent(80, 95, help="CPU busy percent, averaged since the previous run."),
        "cpu_min_span": DurationField("10s", help="The CPU window starts at the newest saved sample "
                                                  "at least this old."),
        "memory_percent": _percent(85, 95, help="Memory in use, percent: (total - available) / total."),
        "swap_percent": _percent(50, 80, help="Swap in use, percent."),
        "disk_percent": _percent(90, 95, help="Space used on each of disk_paths, percent, as df counts it."),
        "inodes_percent": _percent(90, 95, help="Inodes used on each of disk_paths, percent."),
        "load_per_cpu": ThresholdField(1.5, 3.0, help="The 5-minute load average divided by the CPU count."),
        "disk_paths": ListOf(Str(pattern=r"/.*", hint="an absolute path"), default=["/"],
                             help="Absolute paths of the filesystems to check; a missing or "
                                  "unmounted one is critical."),
        "network_interfaces": ListOf(Str(), help="Interfaces measured, whose new errors or drops warn; "
                                                 "empty: all but loopback."),
        "timeout": DurationField("5s", help="Each host check ends within this; a hung statvfs "
                                            "(a dead NFS mount) is critical."),
        "eta_window": DurationField("6h", help="Fill and quota ETAs follow the trend of this last "
                                               "stretch of runs (a least-squares line); at most 48h."),
        "eta_min_span": DurationField("30m", help="No ETA until the runs in eta_window span this "
                                                  "(and number at least 4); shorter than eta_window."),
        "fill_eta": ThresholdField("3d", "12h", lower_is_worse=True, durations=True,
                                   help="Time until a disk (or its inodes) is full at that trend; lower "
                                        "is worse. The worse of this and disk_percent wins."),
    }, check=_eta_rules, help="The host checks, always run. Thresholds are { warning = W, critical = C }; higher "
            "is worse here, and W must not exceed C."),
    "vault": Table({
        "url": Url("http://127.0.0.1:8200", help="The Vault address; the environment's VAULT_ADDR "
                                                 "wins when set."),
        "token_env": Str("VAULT_TOKEN", help="The environment variable the Vault token is read from."),
        "token_file": PathField("", help="Or the file it is read from (mode 0600); no token: the "
                                         "vault-token check is skipped."),
        "timeout": DurationField("5s", help="Connect and read timeout (hvac's own default is 30 s)."),
        "ca_cert": PathField("", help="A CA bundle for a private TLS certificate."),
        "verify": Bool(True, help="Verify the TLS certificate; false only for a lab."),
        "token_ttl": ThresholdField("7d", "1d", lower_is_worse=True, durations=True,
                                    help="The token's remaining TTL; lower is worse."),
        "latency_ms": ThresholdField(500, 2000, help="The health endpoint's answer time, in milliseconds."),
        "secrets": ListOf(SecretRef(), help='KV v2 secrets the scraper needs, "mount/path#key": the '
                                            'vault-secrets check says which are missing, forbidden or '
                                            'empty (never a value).',
                          example=["secret/scraper#api_key", "secret/scraper#rpc_url"]),
        "scraper_token_env": Str("", help="The environment variable holding the scraper's own Vault "
                                          "token: secrets are read with it, and vault-token:scraper "
                                          "checks its TTL. Neither set: monitor's token reads them.",
                                 example="SCRAPER_VAULT_TOKEN"),
        "scraper_token_file": PathField("", help="Or the file the scraper's token is read from (mode "
                                                 "0600)."),
        "tls_expiry": _tls_expiry("an https Vault address"),
    }, optional=True, help="Vault or OpenBao: seal status, answer time and the token's TTL. "
                           "Omitted: no Vault check."),
    "scrapers": TableList(Table({
        "name": _name("scraper"),
        "url": Url(help="A health endpoint that must answer 2xx (redirects followed)."),
        "expect_json": MapOf(scalars_only=True, help="Dotted paths in the JSON answer and the "
                                                     "values they must hold."),
        "latency_ms": ThresholdField(1000, 3000, help="The url's answer time, in milliseconds."),
        "process": Regex(help="A regular expression a running process's command line must "
                              "match (its first 4 KB)."),
        "process_user": UserField(help="Only this account's processes count (name or uid; must "
                                       "exist here); default: any user.",
                                  example="scraper"),
        "heartbeat_file": PathField(help="A file the scraper touches after each successful pass."),
        "heartbeat_max_age": DurationField("15m", help="The heartbeat file is stale when older than this."),
        "timeout": DurationField("5s", help="Each probe of this scraper ends within this."),
        "json_metrics": JsonMetrics(help="Thresholds on numbers in the url's JSON answer, by dotted path: "
                                         "{ warning, critical, lower_is_worse = false }. A field missing or "
                                         "not a number is unknown."),
        "success_rate": ThresholdField(0.9, 0.5, lower_is_worse=True, maximum=1,
                                       help="Share of the last 12 runs (within 1 h) whose probes passed; "
                                            "judged from 4 runs; lower is worse."),
        "ca_cert": PathField("", help="A CA bundle for an https url with a private certificate "
                                      "(default: certifi's bundle)."),
        "verify": Bool(True, help="Verify the url's TLS certificate; false only for a lab (its expiry "
                                  "is still checked)."),
        "tls_expiry": _tls_expiry(),
    }, check=_need_one("url", "process", "heartbeat_file", what="no probe configured")),
        help="One table per scraper; every probe given (url, process, heartbeat_file) is run, "
             "and at least one is needed.",
        example=[("", {"name": "uniswap", "url": "http://127.0.0.1:9101/health",
                       "expect_json": {"status": "ok"},
                       "json_metrics": {"stats.error_rate": {"warning": 0.05, "critical": 0.2},
                                        "stats.success_rate": {"warning": 0.95, "critical": 0.8,
                                                               "lower_is_worse": True}},
                       "process": "scraper.py .*--source uniswap",
                       "heartbeat_file": "/var/lib/scraper/uniswap.heartbeat"})]),
    "quotas": TableList(Table({
        "name": _name("quota"),
        "url": Url(required=True, help="The URL that answers with the quota (GET)."),
        "headers": MapOf(help='Request headers; a value "env:NAME" is read from the environment.'),
        "remaining_header": Str(help="The response header holding the calls remaining."),
        "remaining_json": Str(help="Or a dotted path to them in the JSON answer.",
                              example="data.remaining"),
        "limit_header": Str(help="The response header holding the limit."),
        "limit_json": Str(help="Or a dotted path to it in the JSON answer.", example="data.limit"),
        "limit": Number(minimum=0, help="Or the limit itself, when the API does not say it.",
                        example=100000),
        "remaining_percent": _percent(20, 5, lower_is_worse=True,
                                      help="The calls remaining, percent of the limit; lower is worse."),
        "timeout": DurationField("5s", help="The request ends within this."),
        "reset_header": Str(help="The response header saying when the quota resets: epoch seconds "
                                 "(>= 1e9; >= 1e12: milliseconds) or seconds from now. Warns when the "
                                 "ETA comes first.", example="X-RateLimit-Reset"),
        "reset_every": DurationField(help="Or a fixed reset period, counted from 00:00 UTC "
                                          "(\"1d\": at midnight UTC).", example="1d"),
        "ca_cert": PathField("", help="A CA bundle for an https url with a private certificate "
                                      "(default: certifi's bundle)."),
        "verify": Bool(True, help="Verify the url's TLS certificate; false only for a lab (its expiry "
                                  "is still checked)."),
        "tls_expiry": _tls_expiry(),
    }, check=_quota_rules),
        help="API quotas of the scraper's data providers, from response headers or the JSON answer.",
        example=[("", {"name": "provider", "url": "https://api.example.org/v1/quota",
                       "headers": {"X-Api-Key": "env:PROVIDER_API_KEY"},
                       "remaining_header": "X-RateLimit-Remaining", "limit_header": "X-RateLimit-Limit"}),
                 (_ETHERSCAN_NOTE, {
                     "name": "etherscan",
                     "url": "https://api.etherscan.io/v2/api?chainid=1&module=getapilimit"
                            "&action=getapilimit&apikey=${ETHERSCAN_API_KEY}",
                     "remaining_json": "result.creditsAvailable", "limit_json": "result.creditLimit"})]),
    "backups": TableList(Table({
        "name": _name("backup"),
        "path": PathField(required=True, allow_empty=False,
                          help="A glob matching the set's files; the newest one is judged."),
        "max_age": DurationField("26h", help="The newest file must be younger than this."),
        "min_size": SizeField("1B", help="The newest file must be at least this big."),
        "max_shrink_percent": Number(50, minimum=0, maximum=100,
                                     help="It may be at most this percent smaller than the one before it."),
        "verify": Str("none", choices=("none", "gzip", "tar", "zip", "sha256"),
                      help="How the newest file is read through: none, gzip, tar, zip, or sha256 "
                           "(FILE.sha256 beside it)."),
        "min_count": Number(1, minimum=0, integer=True, help="Retention: at least this many files."),
        "min_free_percent": Number(10, minimum=0, maximum=100,
                                   help="Free space, percent, on the filesystem the backups live on."),
        "timeout": DurationField("10m", help="Each set is checked within this, so one huge file "
                                             "cannot stall the others."),
    }), help="One table per backup set.",
        example=[("", {"name": "postgres", "path": "/var/backups/scraper/*.sql.gz", "min_size": "1MB",
                       "verify": "gzip", "min_count": 3})]),
    "report": Table({
        "database": Url("", allow_empty=True, schemes=("sqlite", "postgresql", "postgres"),
                        hint="a sqlite:///PATH or postgresql://... URL",
                        help="The scraper's database: sqlite:///ABSOLUTE/PATH, sqlite://RELATIVE/PATH "
                             "or postgresql://user@host/db.",
                        example="sqlite:///var/lib/scraper/opportunities.db"),
        "table": Str("opportunities", pattern=r"[A-Za-z_][A-Za-z0-9_.]*", hint="a table name",
                     help="The table of opportunities."),
        "columns": Table({
            "time": Str("found_at", help="When the opportunity was found."),
            "source": Str("source", help="The source that found it."),
            "roi": Str("roi", help="Its return on investment."),
        }, help="The columns of that table."),
        "time_format": Str("iso", choices=("iso", "epoch"),
                           help="How the time column is stored: iso or epoch (PostgreSQL "
                                "timestamp columns need neither)."),
        "query": Str("", help="Optional SQL returning time, source, roi for :start and :end, "
                              "instead of table/columns."),
        "timezone": Str("UTC", help="The report covers the previous calendar day in this time zone."),
        "min_opportunities": Number(50, minimum=0, integer=True,
                                    help="Fewer in a day is a warning (mirrors LowOpportunityCount)."),
        "error_logs": ListOf(PathField(allow_empty=False), default=["logs/*.log"],
                             help="Globs of JSON-lines or plain-text logs whose errors are counted."),
        "template": PathField("", help="Optional Jinja2 template replacing the built-in one."),
        "expected_sources": ListOf(Str(), help="Sources that should report every day."),
        "baseline_drop": Number(0.4, minimum=0, maximum=1,
                                help="A day this far below the 7-day median (0.4: 40 %; and below the same "
                                     "weekday's, when known) is a warning."),
        "baseline_critical": Number(0.7, minimum=0, maximum=1,
                                    help="This far below the 7-day median (and the same weekday's) is "
                                         "critical; at least baseline_drop."),
        "chart": Bool(True, help="Send a chart (PNG, needs the chart extra: matplotlib) with the report."),
    }, optional=True, help="The daily report's business figures. Omitted: the daily report has "
                           "none."),
    "telegram": Table({
        "chat_ids": ListOf(ChatId(), help='The chats to notify: numeric ids or "@channelname".',
                           example=["-1001234567890"]),
        "token_env": Str("TELEGRAM_BOT_TOKEN", help="The environment variable holding the bot token "
                                                    "(not set under cron)."),
        "token_file": PathField("", help="Or the file it is read from (mode 0600; the cron-safe choice)."),
        "token_vault": Str("", pattern=r"[^#\s]+/[^#\s]+#[^#\s]+", hint='"mount/path#key"',
                           help='Or Vault KV v2, e.g. "secret/monitor#telegram_token" (the last one '
                                'read is kept, 0600).'),
        "api_url": Url("https://api.telegram.org", help="The Bot API's address."),
        "timeout": DurationField("10s", help="Every call to Telegram ends within this, retries included."),
        "outbox_max_age": DurationField("24h", help="Undelivered messages older than this are dropped "
                                                    "(logged)."),
        "allowed_users": ListOf(ChatId(), help="In groups and channels, only these Telegram users (numeric "
                                                "ids or @username) may use /ack, /mute and the buttons; empty: "
                                                "everyone in a group, nobody in a channel (`monitor telegram "
                                                "setup` lists ids).",
                                example=["123456789"]),
    }, optional=True, help="Telegram notifications. Omitted: off; with no token, messages wait in "
                           "the outbox (stderr says so)."),
    "alerts": Table({
        "alert_after": Number(1, minimum=1, integer=True, help="Consecutive non-ok runs before the "
                                                               "first alert."),
        "repeat_interval": DurationField("1h", help="Remind this often while critical; warnings: 6x this."),
        "send_resolved": Bool(True, help="Say RESOLVED when a check is ok again."),
        "flap_window": DurationField("15m", positive=False,
                                     help="Resolved and fired again 3 times, each within this: one "
                                          "FLAPPING alert, then quiet until ok or failing for this "
                                          "long (\"0s\": off)."),
    }, help="When alerts are sent."),
    "prometheus": Table({
        "textfile_dir": PathField("", help="node_exporter's textfile collector folder; empty: none."),
        "pushgateway_url": Url("", allow_empty=True,
                               help='A Pushgateway (job "monitor", grouped by host); basic auth: '
                                    '"https://monitor:${PUSHGATEWAY_PASSWORD}@push.example:9091".'),
    }, help="Metrics for Prometheus."),
    "heartbeat": Table({
        "health": Url("", allow_empty=True, help="Pinged by `monitor health`."),
        "backup-check": Url("", allow_empty=True, help="Pinged by `monitor backup-check`."),
        "daily-report": Url("", allow_empty=True, help="Pinged by `monitor daily-report`."),
    }, help="A watcher outside this host, healthchecks.io protocol (monitor/fleet/heartbeat.py); "
            "\"\" = no ping. Each command GETs URL/start when it begins and POSTs URL/<exit code> "
            "when it ends, with its one-line summary as body (<= 10 KB). A ping gets 5 s in all; a "
            "failed one is logged and changes nothing. The URL holds the ping key: keep it in the "
            "environment, e.g. health = \"https://hc-ping.com/${HC_PING_KEY}/health\" (shown as "
            "written, never filled in)."),
    "logs": Table({
        "retention_days": Number(30, minimum=1, integer=True,
                                 help="Archives in logs/archive older than this are removed."),
    }, help="The log archive."),
    "logfiles": TableList(Table({
        "name": _name("log"),
        "path": PathField(required=True, allow_empty=False,
                          help="A glob of the application's log files (app.log; a renamed app.log.1, or its "
                               "gzip copy, is finished from where the last run stopped)."),
        "pattern": Regex("", flags=re.MULTILINE, help="A regular expression that marks an error line (^ and $ "
                                  "match at each line's start and end), instead of the default: "
                                  "JSON records with level ERROR/CRITICAL, or plain lines whose first level "
                                  "word is ERROR, CRITICAL, FATAL, ALERT or EMERG (or logfmt level=error).",
                         example="Traceback|FATAL"),
        "errors_per_minute": _optional(ThresholdField(1, 10, help="Error records per minute since the "
                                                                   "previous run.")),
        "error_ratio": _optional(ThresholdField(0.05, 0.2, maximum=1, help="Error records / all records "
                                                                           "since the previous run.")),
        "initial_window": DurationField("5m", help="The first run counts only the records of this last "
                                                   "span (of at most the last 1 MB), so an old log does "
                                                   "not page."),
        "max_bytes": SizeField("50MB", help="At most this much is read per run; the rest is read by the "
                                            "next run (the message says so)."),
    }, check=_need_one("errors_per_minute", "error_ratio", what="no threshold")),
        help="Application logs whose error rate `monitor health` checks, reading only what was appended "
             "since the previous run (check log:NAME).",
        example=[("", {"name": "scraper", "path": "/var/log/scraper/app.log",
                       "errors_per_minute": {"warning": 1, "critical": 10},
                       "error_ratio": {"warning": 0.05, "critical": 0.2}})]),
    "alertmanager": Table({
        "urls": ListOf(Url(), help="Every replica of the Alertmanager cluster: each run POSTs its active "
                                   "alerts to /api/v2/alerts of each (the cluster de-duplicates).",
                       example=["http://alertmanager-1:9093", "http://alertmanager-2:9093"]),
        "token_env": Str("", help="The environment variable holding a bearer token, if the Alertmanagers "
                                  "sit behind an authenticating proxy.", example="ALERTMANAGER_TOKEN"),
        "token_file": PathField("", help="Or the file it is read from (mode 0600)."),
        "timeout": DurationField("5s", help="All replicas are posted to at once; the whole step ends "
                                            "within this."),
    }, optional=True, check=lambda table, path, ctx: table.get("urls") or ctx.errors.append(
        f"{path}.urls: name at least one Alertmanager (or remove [{path}])"),
        help="Alertmanager as an alert sink, with or without [telegram]: labels alertname, "
                           "check, instance, environment, severity, command; monitor's silences and acks "
                           "become Alertmanager silences; a RESOLVED is kept in state/alertmanager.json "
                           "until a replica took it. Omitted: off."),
})
