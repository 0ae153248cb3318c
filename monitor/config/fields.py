"""The schema toolkit: one class per kind of value a config key may hold.

Each field parses one raw TOML value; it appends "path: problem" to `ctx.errors` and
returns None when the value is bad, so validation goes on and reports everything.
Each also carries a one-line `help` and may carry an `example`: `monitor config
example` writes the sample config from them (monitor/config/example.py), so the
documentation of a key lives beside its parser.
"""

import os
import re

from monitor import redact
from monitor.results import Threshold
from monitor.text import printable
from monitor.units import parse_duration, parse_size


class Context:
    """What parsing needs besides the value: the folder relative paths resolve
    against, and the list every problem is appended to."""

    def __init__(self, base_dir: str):
        self.base_dir = base_dir
        self.errors: list[str] = []


class Field:
    """`help` is the key's one line in the sample config; `example` a value shown there
    instead of the default (for a TableList: its sample entries)."""

    def __init__(self, default=None, required=False, help="", example=None):
        self.default, self.required = default, required
        self.help, self.example = help, example

    def parse(self, value, path, ctx):
        raise NotImplementedError

    def fail(self, path, ctx, message):
        ctx.errors.append(f"{path}: {message}")


def _type_name(value):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


class Str(Field):
    def __init__(self, default=None, required=False, choices=None, pattern=None, hint="", **doc):
        super().__init__(default, required, **doc)
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
    def __init__(self, default=None, required=False, minimum=None, maximum=None, integer=False, **doc):
        super().__init__(default, required, **doc)
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
    def __init__(self, default=None, required=False, positive=True, **doc):
        super().__init__(None if default is None else parse_duration(default), required, **doc)
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
    def __init__(self, default=None, required=False, **doc):
        super().__init__(None if default is None else parse_size(default), required, **doc)

    def parse(self, value, path, ctx):
        try:
            return parse_size(value)
        except ValueError as exc:
            return self.fail(path, ctx, str(exc))


class PathField(Str):
    """A file or folder; `~` expanded, relative paths resolved against the config's folder."""

    def __init__(self, default=None, required=False, allow_empty=True, **doc):
        super().__init__(default, required, **doc)
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
    def __init__(self, default=None, flags=0, **keys):
        super().__init__(default, **keys)
        self.flags = flags  # as the check compiles it

    def parse(self, value, path, ctx):
        value = super().parse(value, path, ctx)
        if value is not None:
            try:
                re.compile(value, self.flags)
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
        except (KeyError, ValueError):  # ValueError: a NUL byte in the name
            return self.fail(path, ctx, f"no such user \"{printable(value)}\" on this system")


class UrlValue(str):
    """A URL with its `${NAME}` placeholders expanded; `template` is what the file says
    (shown by `config check`: the expanded value may hold a ping key)."""

    template = ""


PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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

    expanded = PLACEHOLDER.sub(substitute, value)
    if "${" in PLACEHOLDER.sub("", value):
        bad.append(f'{path}: malformed placeholder in "{value}"; expected ${{NAME}} with NAME letters, digits or _')
    if bad:
        errors.extend(bad)
        return None
    for match in PLACEHOLDER.finditer(value):
        redact.register(environ[match.group(1)])
    return expanded


class Url(Str):
    """An http(s) URL; `${NAME}` placeholders are filled from the environment (SPEC round 2)."""

    def __init__(self, default=None, required=False, schemes=("http", "https"), allow_empty=False,
                 hint="", **doc):
        super().__init__(default, required, hint=hint, **doc)
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
                 minimum=0, maximum=None, **doc):
        self.lower_is_worse, self.durations = lower_is_worse, durations
        self.minimum, self.maximum = minimum, maximum
        conv = parse_duration if durations else (lambda v: v)
        super().__init__(Threshold(conv(warning), conv(critical), lower_is_worse), **doc)

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
    def __init__(self, item, default=(), required=False, min_items=0, **doc):
        super().__init__(list(default), required, **doc)
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

    def __init__(self, scalars_only=False, **doc):
        super().__init__({}, **doc)
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

    def __init__(self, fields, optional=False, check=None, **doc):
        super().__init__(None, **doc)
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
    """An array of tables (`[[scrapers]]`), each with a unique `name`; its `example`
    is a list of (note, entry) pairs, the sample config's entries."""

    def __init__(self, table, **doc):
        super().__init__([], **doc)
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


class SecretRef(Str):
    """A Vault KV v2 reference "mount/path#key", shaped as `monitor.vault_secrets.parse_ref` reads it."""

    def parse(self, value, path, ctx):
        value = super().parse(value, path, ctx)
        if value is None:
            return None
        from monitor.vault_secrets import SecretError, parse_ref

        try:
            parse_ref(value)
        except SecretError:
            return self.fail(path, ctx, f'expected "mount/path#key" (KV v2), like "secret/scraper#api_key", '
                                        f'got "{printable(value)}"')
        return value
