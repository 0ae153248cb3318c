"""Config: find the TOML file, merge the environment profile, validate every key.

The result is a plain nested dict of parsed values (durations in seconds, sizes in
bytes, thresholds as `Threshold`, paths absolute). Every problem is collected and
raised at once as `ConfigError`, each message starting with its dotted path.
"""

import os
import re

from monitor import redact
from monitor.results import Threshold
from monitor.units import Duration, Size, parse_duration, parse_size

SEARCH_PATHS = ("monitor.toml", "/etc/monitor/monitor.toml")
DEFAULT_ENVIRONMENT = "prod"


class ConfigError(Exception):
    """Bad config or bad usage; `errors` holds one line per problem."""

    def __init__(self, errors):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


# --- field types -------------------------------------------------------------------
# Each field parses one raw TOML value; it appends "path: problem" to `errors` and
# returns None when the value is bad, so validation goes on and reports everything.

class Field:
    def __init__(self, default=None, required=False):
        self.default, self.required = default, required

    def parse(self, value, path, ctx):
        raise NotImplementedError

    def fail(self, path, ctx, message):
        ctx.errors.append(f"{path}: {message}")


def _type_name(value):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


class Str(Field):
    def __init__(self, default=None, required=False, choices=None, pattern=None, hint=""):
        super().__init__(default, required)
        self.choices, self.pattern, self.hint = choices, pattern, hint

    def parse(self, value, path, ctx):
        if not isinstance(value, str):
            return self.fail(path, ctx, f"expected a string, got {_type_name(value)}")
        if self.choices and value not in self.choices:
            return self.fail(path, ctx, f"expected one of {', '.join(self.choices)}, got \"{value}\"")
        if self.pattern and value and not re.fullmatch(self.pattern, value):
            return self.fail(path, ctx, f"expected {self.hint}, got \"{value}\"")
        return value


class Number(Field):
    def __init__(self, default=None, required=False, minimum=None, maximum=None, integer=False):
        super().__init__(default, required)
        self.minimum, self.maximum, self.integer = minimum, maximum, integer

    def parse(self, value, path, ctx):
        kinds = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            expected = "an integer" if self.integer else "a number"
            return self.fail(path, ctx, f"expected {expected}, got {_type_name(value)}")
        if value != value or (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum):
            low = "" if self.minimum is None else self.minimum
            high = "" if self.maximum is None else self.maximum
            return self.fail(path, ctx, f"expected a value in [{low}, {high}], got {value}")
        return value


class Bool(Field):
    def parse(self, value, path, ctx):
        if not isinstance(value, bool):
            return self.fail(path, ctx, f"expected true or false, got {_type_name(value)}")
        return value


class DurationField(Field):
    def __init__(self, default=None, required=False, positive=True):
        super().__init__(None if default is None else parse_duration(default), required)
        self.positive = positive

    def parse(self, value, path, ctx):
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            return self.fail(path, ctx, str(exc))
        if self.positive and duration <= 0:
            return self.fail(path, ctx, f'expected a duration above zero, got "{value}"')
        return duration


class SizeField(Field):
    def __init__(self, default=None, required=False):
        super().__init__(None if default is None else parse_size(default), required)

    def parse(self, value, path, ctx):
        try:
            return parse_size(value)
        except ValueError as exc:
            return self.fail(path, ctx, str(exc))


class PathField(Str):
    """A file or folder; `~` expanded, relative paths resolved against the config's folder."""

    def __init__(self, default=None, required=False, allow_empty=True):
        super().__init__(default, required)
        self.allow_empty = allow_empty

    def parse(self, value, path, ctx):
        value = super().parse(value, path, ctx)
        if value is None:
            return None
        if not value:
            return "" if self.allow_empty else self.fail(path, ctx, "expected a path, got an empty string")
        return os.path.normpath(os.path.join(ctx.base_dir, os.path.expanduser(value)))

    def default_value(self, ctx):
        return None if self.default is None else self.parse(self.default, "", ctx)


class Regex(Str):
    def parse(self, value, path, ctx):
        value = super().parse(value, path, ctx)
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                return self.fail(path, ctx, f"invalid regular expression: {exc}")
        return value


class UserField(Field):
    """A local account: a user name or a numeric uid; parsed to the uid (an int)."""

    def parse(self, value, path, ctx):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return self.fail(path, ctx, f"expected a user name or uid, got {_type_name(value)}")
        if isinstance(value, int) or value.isdigit():
            uid = int(value)
            return uid if 0 <= uid < 2**32 else self.fail(path, ctx, f"expected a uid in [0, 4294967295], got {uid}")
        import pwd

        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            return self.fail(path, ctx, f"no such user \"{value}\" on this system")


class UrlValue(str):
    """A URL with its `${NAME}` placeholders expanded; `template` is what the file says
    (shown by `config check`: the expanded value may hold a ping key)."""

    template = ""


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_placeholders(value: str, path: str, errors: list, environ=os.environ) -> str | None:
    """Given a URL template, return it with every `${NAME}` replaced by the environment's
    value (registered with monitor.redact as a secret); None after appending an error
    naming the key and the variable when one is unset or cannot sit in a URL."""
    if "$" not in value:
        return value
    bad = []

    def substitute(match):
        name = match.group(1)
        found = environ.get(name, "")
        if not found:
            bad.append(f"{path}: environment variable {name} (in ${{{name}}}) is not set")
        elif any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in found):
            bad.append(f"{path}: environment variable {name} (in ${{{name}}}) holds spaces or control characters")
        return found

    expanded = _PLACEHOLDER.sub(substitute, value)
    if "${" in _PLACEHOLDER.sub("", value):
        bad.append(f'{path}: malformed placeholder in "{value}"; expected ${{NAME}} with NAME letters, digits or _')
    if bad:
        errors.extend(bad)
        return None
    for match in _PLACEHOLDER.finditer(value):
        redact.register(environ[match.group(1)])
    return expanded


class Url(Str):
    """An http(s) URL; `${NAME}` placeholders are filled from the environment (SPEC round 2)."""

    def __init__(self, default=None, required=False, schemes=("http", "https"), allow_empty=False,
                 hint=""):
        super().__init__(default, required, hint=hint)
        self.schemes, self.allow_empty = schemes, allow_empty

    def parse(self, value, path, ctx):
        value = super().parse(value, path, ctx)
        if value is None:
            return None
        if not value and self.allow_empty:
            return ""
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in self.schemes or not rest.strip("/"):
            allowed = " or ".join(f"{s}://" for s in self.schemes)
            return self.fail(path, ctx, f'expected {self.hint or "a URL starting with " + allowed}, got "{value}"')
        expanded = expand_placeholders(value, path, ctx.errors)
        if expanded is None or expanded == value:
            return expanded
        url = UrlValue(expanded)
        url.template = value
        return url


class ThresholdField(Field):
    """`{ warning = X, critical = Y }`; numbers, or durations when `durations` is set."""

    def __init__(self, warning, critical, lower_is_worse=False, durations=False,
                 minimum=0, maximum=None):
        self.lower_is_worse, self.durations = lower_is_worse, durations
        self.minimum, self.maximum = minimum, maximum
        conv = parse_duration if durations else (lambda v: v)
        super().__init__(Threshold(conv(warning), conv(critical), lower_is_worse))

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.fail(path, ctx, f"expected a table like {{ warning = ..., critical = ... }}, got {_type_name(value)}")
        unknown = sorted(set(value) - {"warning", "critical"})
        for key in unknown:
            self.fail(f"{path}.{key}", ctx, "unknown key (expected warning or critical)")
        level = DurationField() if self.durations else Number(minimum=self.minimum, maximum=self.maximum)
        parsed = {}
        for key in ("warning", "critical"):
            if key not in value:
                self.fail(f"{path}.{key}", ctx, "required")
                continue
            parsed[key] = level.parse(value[key], f"{path}.{key}", ctx)
        if unknown or None in parsed.values() or len(parsed) < 2:
            return None
        warning, critical = parsed["warning"], parsed["critical"]
        show = (lambda d: f'"{d.text}"') if self.durations else (lambda n: n)
        if self.lower_is_worse and warning < critical:
            return self.fail(path, ctx, f"warning ({show(warning)}) is below critical ({show(critical)}); lower is worse here")
        if not self.lower_is_worse and warning > critical:
            return self.fail(path, ctx, f"warning ({show(warning)}) is above critical ({show(critical)})")
        return Threshold(warning, critical, self.lower_is_worse)


class ListOf(Field):
    def __init__(self, item, default=(), required=False, min_items=0):
        super().__init__(list(default), required)
        self.item, self.min_items = item, min_items

    def parse(self, value, path, ctx):
        if not isinstance(value, list):
            return self.fail(path, ctx, f"expected a list, got {_type_name(value)}")
        if len(value) < self.min_items:
            return self.fail(path, ctx, f"expected at least {self.min_items} item(s)")
        items = [self.item.parse(v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
        return None if None in items else items

    def default_value(self, ctx):
        return [self.item.parse(v, "", ctx) for v in self.default]


class MapOf(Field):
    """A table of free-form keys: HTTP headers, expected JSON fields."""

    def __init__(self, scalars_only=False):
        super().__init__({})
        self.scalars_only = scalars_only

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.fail(path, ctx, f"expected a table, got {_type_name(value)}")
        for key, item in value.items():
            ok = isinstance(item, (str, int, float, bool)) if self.scalars_only else isinstance(item, str)
            if not ok:
                self.fail(f"{path}.{key}", ctx, f"expected {'a string, number or boolean' if self.scalars_only else 'a string'}, got {_type_name(item)}")
        return dict(value)


class ChatId(Field):
    def parse(self, value, path, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+|@[A-Za-z][A-Za-z0-9_]{3,}", value):
            return value
        return self.fail(path, ctx, f"expected a numeric chat id or @channelname, got {value!r}")


class Table(Field):
    """A TOML table with known keys; `optional` tables are None when absent."""

    def __init__(self, fields, optional=False, check=None):
        super().__init__(None)
        self.fields, self.optional, self.check = fields, optional, check

    def parse(self, value, path, ctx):
        if not isinstance(value, dict):
            return self.fail(path, ctx, f"expected a table, got {_type_name(value)}")
        out = {}
        prefix = f"{path}." if path else ""
        for key in value:
            if key not in self.fields:
                self.fail(prefix + key, ctx, "unknown key" + _suggest(key, self.fields))
        for key, spec in self.fields.items():
            if key in value:
                out[key] = spec.parse(value[key], prefix + key, ctx)
            elif spec.required:
                self.fail(prefix + key, ctx, "required")
            else:
                out[key] = _default(spec, ctx)
        if self.check:
            # A key given with a bad value counts as given: its own error says what is wrong.
            self.check({**out, **{k: value[k] for k in value if out.get(k) is None}}, path, ctx)
        return out

    def default_value(self, ctx):
        return None if self.optional else self.parse({}, "", ctx)


class TableList(Field):
    """An array of tables (`[[scrapers]]`), each with a unique `name`."""

    def __init__(self, table):
        super().__init__([])
        self.table = table

    def parse(self, value, path, ctx):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            return self.fail(path, ctx, f"expected an array of tables ([[{path}]]), got {_type_name(value)}")
        items = [self.table.parse(v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
        seen = set()
        for i, item in enumerate(items):
            name = item.get("name")
            if name in seen:
                self.fail(f"{path}[{i}].name", ctx, f'duplicate name "{name}"')
            seen.add(name)
        return items

    def default_value(self, ctx):
        return []


def _default(spec, ctx):
    if hasattr(spec, "default_value"):
        return spec.default_value(ctx)
    return spec.default


def _suggest(key, known):
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, list(known), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


# --- cross-field rules ---------------------------------------------------------------

def _need_one(*keys, what):
    def check(table, path, ctx):
        if not any(table.get(k) not in (None, "") for k in keys):
            ctx.errors.append(f"{path}: {what}: set one of {', '.join(keys)}")
    return check


def _quota_rules(table, path, ctx):
    _need_one("remaining_header", "remaining_json", what="no remaining quota source")(table, path, ctx)
    _need_one("limit_header", "limit_json", "limit", what="no quota limit source")(table, path, ctx)


# --- the schema ---------------------------------------------------------------------

def _percent(warning, critical, lower_is_worse=False):
    return ThresholdField(warning, critical, lower_is_worse, maximum=100)


# A profile name reaches crontab lines (`monitor cron`), messages and rendered rules: no
# spaces, quotes, `;`, `%` or line breaks.
PROFILE_NAME = r"[A-Za-z0-9_.-]+"
_PROFILE_HINT = "letters, digits, _ . and - only"


SCHEMA = Table({
    "environment": Str(DEFAULT_ENVIRONMENT, pattern=PROFILE_NAME, hint="a profile name"),
    "paths": Table({
        "logs": PathField("logs", allow_empty=False),
        "state": PathField("state", allow_empty=False),
    }),
    "system": Table({
        "cpu_percent": _percent(80, 95),
        "cpu_min_span": DurationField("10s"),
        "memory_percent": _percent(85, 95),
        "swap_percent": _percent(50, 80),
        "disk_percent": _percent(90, 95),
        "inodes_percent": _percent(90, 95),
        "load_per_cpu": ThresholdField(1.5, 3.0),
        "disk_paths": ListOf(Str(pattern=r"/.*", hint="an absolute path"), default=["/"]),
        "network_interfaces": ListOf(Str()),
        "timeout": DurationField("5s"),
    }),
    "vault": Table({
        "url": Url("http://127.0.0.1:8200"),
        "token_env": Str("VAULT_TOKEN"),
        "token_file": PathField(""),
        "timeout": DurationField("5s"),
        "ca_cert": PathField(""),
        "verify": Bool(True),
        "token_ttl": ThresholdField("7d", "1d", lower_is_worse=True, durations=True),
        "latency_ms": ThresholdField(500, 2000),
    }, optional=True),
    "scrapers": TableList(Table({
        "name": Str(required=True, pattern=r"[A-Za-z0-9_.-]+", hint="letters, digits, _ . -"),
        "url": Url(),
        "expect_json": MapOf(scalars_only=True),
        "latency_ms": ThresholdField(1000, 3000),
        "process": Regex(),
        "process_user": UserField(),
        "heartbeat_file": PathField(),
        "heartbeat_max_age": DurationField("15m"),
        "timeout": DurationField("5s"),
    }, check=_need_one("url", "process", "heartbeat_file", what="no probe configured"))),
    "quotas": TableList(Table({
        "name": Str(required=True, pattern=r"[A-Za-z0-9_.-]+", hint="letters, digits, _ . -"),
        "url": Url(required=True),
        "headers": MapOf(),
        "remaining_header": Str(),
        "remaining_json": Str(),
        "limit_header": Str(),
        "limit_json": Str(),
        "limit": Number(minimum=0),
        "remaining_percent": _percent(20, 5, lower_is_worse=True),
        "timeout": DurationField("5s"),
    }, check=_quota_rules)),
    "backups": TableList(Table({
        "name": Str(required=True, pattern=r"[A-Za-z0-9_.-]+", hint="letters, digits, _ . -"),
        "path": PathField(required=True, allow_empty=False),
        "max_age": DurationField("26h"),
        "min_size": SizeField("1B"),
        "max_shrink_percent": Number(50, minimum=0, maximum=100),
        "verify": Str("none", choices=("none", "gzip", "tar", "zip", "sha256")),
        "min_count": Number(1, minimum=0, integer=True),
        "min_free_percent": Number(10, minimum=0, maximum=100),
        "timeout": DurationField("10m"),
    })),
    "report": Table({
        "database": Url("", allow_empty=True, schemes=("sqlite", "postgresql", "postgres"),
                        hint="a sqlite:///PATH or postgresql://... URL"),
        "table": Str("opportunities", pattern=r"[A-Za-z_][A-Za-z0-9_.]*", hint="a table name"),
        "columns": Table({
            "time": Str("found_at"), "source": Str("source"), "roi": Str("roi"),
        }),
        "time_format": Str("iso", choices=("iso", "epoch")),
        "query": Str(""),
        "timezone": Str("UTC"),
        "min_opportunities": Number(50, minimum=0, integer=True),
        "error_logs": ListOf(PathField(allow_empty=False), default=["logs/*.log"]),
        "template": PathField(""),
        "expected_sources": ListOf(Str()),
    }, optional=True),
    "telegram": Table({
        "chat_ids": ListOf(ChatId()),
        "token_env": Str("TELEGRAM_BOT_TOKEN"),
        "token_file": PathField(""),
        "token_vault": Str("", pattern=r"[^#\s]+/[^#\s]+#[^#\s]+", hint='"mount/path#key"'),
        "api_url": Url("https://api.telegram.org"),
        "timeout": DurationField("10s"),
        "outbox_max_age": DurationField("24h"),
    }, optional=True),
    "alerts": Table({
        "alert_after": Number(1, minimum=1, integer=True),
        "repeat_interval": DurationField("1h"),
        "send_resolved": Bool(True),
        "flap_window": DurationField("15m", positive=False),  # "0s": no flap detection
    }),
    "prometheus": Table({
        "textfile_dir": PathField(""),
        "pushgateway_url": Url("", allow_empty=True),
    }),
    "heartbeat": Table({  # healthchecks.io pings: URL/start, then URL/<exit code> (monitor/heartbeat.py)
        "health": Url("", allow_empty=True),
        "backup-check": Url("", allow_empty=True),
        "daily-report": Url("", allow_empty=True),
    }),
    "logs": Table({
        "retention_days": Number(30, minimum=1, integer=True),
    }),
})


def _check_timezone(config, errors):
    report = config.get("report")
    if not report or not report.get("timezone"):
        return
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(report["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder
        errors.append(f'report.timezone: unknown time zone "{report["timezone"]}"')


# --- secrets are refused --------------------------------------------------------------

_SECRET_KEYS = {"token", "bot_token", "password", "passwd", "secret", "api_key", "apikey",
                "vault_token", "secret_id", "private_key"}
# What a token looks like is defined once, in monitor.redact (which masks the same shapes).
_TELEGRAM_TOKEN, _VAULT_TOKEN = redact.TELEGRAM_TOKEN, redact.VAULT_TOKEN
_SECRET_HEADER = r"(?i)auth|key|token|secret|password|cookie"
_URL_PASSWORD = r"(?i)[a-z+]+://[^/@:]*:([^/@]+)@"
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_HINT = "secrets may not be stored in the config file"


def _find_secrets(node, path, errors, found):
    """Append an error per secret in `node` to `errors`, and each secret value to `found`."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if key.lower() in _SECRET_KEYS:
                errors.append(f"{sub}: {_SECRET_HINT}; use token_env or token_file instead")
            elif path.endswith("headers") and isinstance(value, str) and re.search(_SECRET_HEADER, key) \
                    and not value.startswith("env:"):
                errors.append(f'{sub}: {_SECRET_HINT}; write "env:VARIABLE" to read it from the environment')
            else:
                _find_secrets(value, sub, errors, found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _find_secrets(value, f"{path}[{i}]", errors, found)
    elif isinstance(node, str):
        if re.search(_TELEGRAM_TOKEN, node) or re.fullmatch(_VAULT_TOKEN, node.strip()):
            errors.append(f"{path}: looks like a token; {_SECRET_HINT}")
            found.append(node)
        elif _URL_START.match(node):
            problem = _url_secret(node)
            if problem:
                errors.append(f"{path}: {problem}")
                found.append(node)


def _only_placeholders(value: str) -> bool:
    return bool(value) and not _PLACEHOLDER.sub("", value)


def _url_secret(url: str) -> str | None:
    """Say why a URL holds a literal secret (a password in the userinfo, a value for a
    query parameter named like a key); None when every secret in it is a ${NAME}."""
    password = re.match(_URL_PASSWORD, url)
    if password and not _only_placeholders(password.group(1)):
        return (f"the URL contains a password; {_SECRET_HINT} (write ${{NAME}} to read it from "
                "the environment, or use PGPASSWORD or ~/.pgpass)")
    query = url.partition("?")[2].partition("#")[0]
    for pair in re.split("[&;]", query):
        name, sep, value = pair.partition("=")
        if sep and value and name.lower() in redact.SECRET_QUERY_NAMES and not _only_placeholders(value):
            return (f'the URL holds a literal value for the query parameter "{name}"; {_SECRET_HINT} '
                    f"(write {name}=${{NAME}} to read it from the environment variable NAME)")
    return None


def _masked(errors: list[str], secrets: list[str]) -> list[str]:
    """Other checks of a field echo its value ("got ..."): a refused secret must not."""
    for secret in secrets:
        errors = [e.replace(secret, "****") for e in errors]
    return errors


# --- loading --------------------------------------------------------------------------

class _Context:
    def __init__(self, base_dir: str):
        self.base_dir = base_dir
        self.errors: list[str] = []


def find_config_file(explicit: str | None) -> str | None:
    """Return the config file to use: --config/$MONITOR_CONFIG, ./monitor.toml, /etc; or None."""
    if explicit:
        path = os.path.expanduser(explicit)
        if not os.path.exists(path):
            raise ConfigError(f"--config: {explicit}: no such file")
        if os.path.isdir(path):
            raise ConfigError(f"--config: {explicit}: is a directory, expected a TOML file")
        return os.path.abspath(path)
    for candidate in SEARCH_PATHS:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


# Nesting deeper than this is refused: the schema's deepest key is 5 levels down
# (env.dev.system.cpu_percent.warning); 100 000 nested tables would otherwise end in
# a RecursionError traceback (tomllib, or the walks below), or take tomllib minutes.
MAX_DEPTH = 32
_KEY_PART = rb"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')[ \t]*\.[ \t]*"""


def _too_deep_key(data: bytes) -> int | None:
    """The line number of a dotted key or table header with MAX_DEPTH parts or more, or None.

    tomllib's time grows with the square of a dotted key's length (100 000 parts: 20 s),
    so such a key is refused before parsing. Parts are bare or quoted keys. Only a line
    with that many dots is looked at (a regex with {32} would cost 7 ms to compile).
    """
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.count(b".") >= MAX_DEPTH:
            match = re.match(rb"[ \t]*\[*[ \t]*(?:" + _KEY_PART + rb")+", line)
            if match and len(re.findall(_KEY_PART, match.group(0))) >= MAX_DEPTH:
                return number
    return None


def _too_deep(document) -> str | None:
    """The dotted path of the first value nested more than MAX_DEPTH levels, or None (no recursion)."""
    stack = [(document, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return path
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
    return None


def _depth_error(where: str, path: str) -> str:
    shown = path if len(path) <= 80 else path[:80] + "…"
    return f"{where}: nested more than {MAX_DEPTH} levels deep ({shown})"


def read_toml(path: str) -> dict:
    import tomllib  # only when there is a file: a no-config run never pays for it

    try:
        with open(path, "rb") as handle:
            data = handle.read()
        line = _too_deep_key(data)
        if line is not None:
            raise ConfigError(f"{path}: line {line}: a key nested more than {MAX_DEPTH} levels deep")
        return tomllib.loads(data.decode("utf-8"))
    except RecursionError:  # "a = {a = {a = ..." or "[[[[...": tomllib recurses per level
        raise ConfigError(f"{path}: invalid TOML: nested more than {MAX_DEPTH} levels deep") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: the file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def deep_merge(base: dict, over: dict) -> dict:
    """Return base with `over` merged in: tables recursively, everything else replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def profiles(raw: dict) -> list[str]:
    names = set(raw.get("env", {}) if isinstance(raw.get("env"), dict) else ())
    environment = raw.get("environment", DEFAULT_ENVIRONMENT)
    if isinstance(environment, str):
        names.add(environment)
    return sorted(names)


def build(raw: dict, env: str | None, base_dir: str, source: str = "") -> dict:
    """Given a raw TOML document, return the validated config for profile `env`."""
    deep = _too_deep(raw)
    if deep is not None:  # every walk below recurses
        raise ConfigError(_depth_error(source or "config", deep))
    errors: list[str] = []
    secrets: list[str] = []
    _find_secrets(raw, "", errors, secrets)
    profile_tables = raw.get("env", {})
    if not isinstance(profile_tables, dict) or not all(isinstance(v, dict) for v in profile_tables.values()):
        errors.append("env: expected tables like [env.dev]")
        profile_tables = {}
    if env and not re.fullmatch(PROFILE_NAME, env):
        from monitor.text import printable

        raise ConfigError(f'--env: a profile name is {_PROFILE_HINT}, got "{printable(env)}"')
    for profile in profile_tables:
        if not re.fullmatch(PROFILE_NAME, profile):
            from monitor.text import printable

            errors.append(f'env."{printable(profile)}": a profile name is {_PROFILE_HINT}')
    base = {k: v for k, v in raw.items() if k != "env"}
    # A non-string `environment` is reported by the schema below; it cannot name a profile.
    declared = base.get("environment")
    name = env or (declared if isinstance(declared, str) else None) or DEFAULT_ENVIRONMENT
    if env and env not in profiles(raw):
        where = f" in {source}" if source else " (no config file)"
        raise ConfigError(f'--env: no profile "{env}"{where}; known: {", ".join(profiles(raw))}')
    if name in profile_tables:
        if "environment" in profile_tables[name]:
            errors.append(f"env.{name}.environment: not allowed inside a profile")
        base = deep_merge(base, profile_tables[name])
    ctx = _Context(base_dir)
    config = SCHEMA.parse(base, "", ctx)
    errors.extend(ctx.errors)
    _check_timezone(config, errors)
    if config.get("report") and config["report"]["template"]:
        from monitor.report.text import validate_template  # imports jinja2: only with a template

        error = validate_template(config["report"]["template"])
        if error:
            errors.append(error)
    if errors:
        raise ConfigError(_masked(errors, secrets))
    config["environment"] = name
    config["source"] = source or None
    return config


def section_defaults(config: dict, section: str) -> dict:
    """The validated defaults of an optional section the config leaves out (paths
    resolved like the rest: against the config file's folder, else the working directory)."""
    base_dir = os.path.dirname(config["source"]) if config.get("source") else os.getcwd()
    return SCHEMA.fields[section].parse({}, section, _Context(base_dir))


def load(path_option: str | None = None, env: str | None = None) -> dict:
    """Find, read and validate the config. Raise ConfigError listing every problem."""
    path = find_config_file(path_option)
    if path is None:
        return build({}, env, os.getcwd())
    return build(read_toml(path), env, os.path.dirname(path), path)


def exposure_warnings(path: str | None, config: dict) -> list[str]:
    """Given the config file's path and the config loaded from it, return who-may-read warnings.

    A config file that others may read and that names a token file tells them where
    the token is kept; a telegram.token_file that group or others may read gives the
    token away (vault.token_file is checked by `vault_secrets.read_token` when used).
    Reads file modes only, never a token; `build` stays pure.
    """
    import stat

    named = [(f"{section}.token_file", config[section]["token_file"]) for section in ("vault", "telegram")
             if config.get(section) and config[section].get("token_file")]
    warnings = []
    if path and named:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0
        if mode & 0o004:
            warnings.append(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}) and names "
                            f"{', '.join(key for key, _ in named)}; run: chmod o-r {path}")
    for key, token_file in named:
        if key != "telegram.token_file":
            continue
        try:
            mode = os.stat(token_file).st_mode
        except OSError:
            continue  # a missing file is said when the token is read
        if stat.S_ISREG(mode) and mode & 0o077:
            warnings.append(f"{key} {token_file} is accessible by group or others "
                            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {token_file}")
    return warnings


def display(config: dict) -> dict:
    """Return the config as JSON-friendly values in the units the user wrote."""
    def show(value):
        if isinstance(value, UrlValue):  # the template: never the ping key it was filled with
            return redact.clean_url(value.template)
        if isinstance(value, str) and _URL_START.match(value):  # query values, user:password@
            return redact.clean_url(value)
        if isinstance(value, (Duration, Size)):
            return value.text
        if isinstance(value, Threshold):
            return {"warning": show(value.warning), "critical": show(value.critical)}
        if isinstance(value, dict):
            return {k: show(v) for k, v in value.items()}
        if isinstance(value, list):
            return [show(v) for v in value]
        return value
    shown = show(config)
    for key, url in (shown.get("heartbeat") or {}).items():
        if url and not isinstance(config["heartbeat"][key], UrlValue):  # a literal ping URL is its key
            from monitor.redact import mask_url

            shown["heartbeat"][key] = mask_url(url)
    return shown


def secret_sources(config: dict, environ=os.environ) -> dict:
    """Say where each secret would come from and whether it is there, never its value."""
    out = {}
    for section in ("vault", "telegram"):
        table = config.get(section)
        if not table:
            continue
        if table.get("token_env"):
            present = bool(environ.get(table["token_env"]))
            out[f"{section}.token_env"] = f"${table['token_env']} ({'set, ****' if present else 'not set'})"
        if table.get("token_file"):
            exists = os.path.isfile(table["token_file"])
            out[f"{section}.token_file"] = f"{table['token_file']} ({'present' if exists else 'missing'})"
        if table.get("token_vault"):
            out[f"{section}.token_vault"] = table["token_vault"]
    return out
