"""Config: find the TOML file, merge the environment profile, validate every key.

The result is a plain nested dict of parsed values (durations in seconds, sizes in
bytes, thresholds as `Threshold`, paths absolute). Every problem is collected and
raised at once as `ConfigError`, each message starting with its dotted path.

The schema toolkit is in `fields`, the schema itself (with each key's help) in
`schema`, the refusal and masking of secrets in `secrets`; the sample config is
written from the schema by `example` (not imported here: no run needs it). Their
public names are re-exported here.
"""

import os
import re

# Re-exported: the rest of monitor and the tests import these from monitor.config.
from monitor.config.fields import (Bool, ChatId, Context, DurationField, Field, ListOf, MapOf,
                                   Number, PathField, Regex, SizeField, Str, Table, TableList,
                                   ThresholdField, Url, UrlValue, UserField, expand_placeholders)
from monitor.config.schema import (DEFAULT_ENVIRONMENT, PROFILE_HINT, PROFILE_NAME, SCHEMA, check_baselines,
                                   check_timezone)
from monitor.config.secrets import display, exposure_warnings, find_secrets, masked, secret_sources
from monitor.text import printable

SEARCH_PATHS = ("monitor.toml", "/etc/monitor/monitor.toml")


class ConfigError(Exception):
    """Bad config or bad usage; `errors` holds one line per problem."""

    def __init__(self, errors):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("; ".join(self.errors))


# --- loading --------------------------------------------------------------------------


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
    find_secrets(raw, "", errors, secrets)
    profile_tables = raw.get("env", {})
    if not isinstance(profile_tables, dict) or not all(isinstance(v, dict) for v in profile_tables.values()):
        errors.append("env: expected tables like [env.dev]")
        profile_tables = {}
    if env and not re.fullmatch(PROFILE_NAME, env):
        raise ConfigError(f'--env: a profile name is {PROFILE_HINT}, got "{printable(env)}"')
    for profile in profile_tables:
        if not re.fullmatch(PROFILE_NAME, profile):
            errors.append(f'env."{printable(profile)}": a profile name is {PROFILE_HINT}')
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
    ctx = Context(base_dir)
    config = SCHEMA.parse(base, "", ctx)
    errors.extend(ctx.errors)
    check_timezone(config, errors)
    check_baselines(config, errors)
    if config.get("report") and config["report"]["template"]:
        from monitor.report.text import validate_template  # imports jinja2: only with a template

        error = validate_template(config["report"]["template"])
        if error:
            errors.append(error)
    if errors:
        raise ConfigError(masked(errors, secrets))
    config["environment"] = name
    config["source"] = source or None
    return config


def section_defaults(config: dict, section: str) -> dict:
    """The validated defaults of an optional section the config leaves out (paths
    resolved like the rest: against the config file's folder, else the working directory)."""
    base_dir = os.path.dirname(config["source"]) if config.get("source") else os.getcwd()
    return SCHEMA.fields[section].parse({}, section, Context(base_dir))


def load(path_option: str | None = None, env: str | None = None) -> dict:
    """Find, read and validate the config. Raise ConfigError listing every problem."""
    path = find_config_file(path_option)
    if path is None:
        return build({}, env, os.getcwd())
    return build(read_toml(path), env, os.path.dirname(path), path)
