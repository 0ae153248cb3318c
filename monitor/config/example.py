"""`monitor config example`: the sample config, written from the schema.

Modelled on borgmatic's config/generate.py: every key of monitor/config/schema.py with
its help as a comment above it and its default as the value; where the schema gives an
`example=` the value shown is that one and the help names the default. An array of
tables gets the sample entries of its `example=`: the first shows every key (those it
leaves out at their default, or commented out when they have none), the others only
what they set. monitor.example.toml is this output; tests/test_config.py fails when
the committed file drifts. No run imports this module.
"""

import json
import re
import textwrap

from monitor.config.fields import Table, TableList
from monitor.config.schema import SCHEMA
from monitor.results import Threshold

WIDTH = 90

PREAMBLE = """\
# monitor.example.toml: every key monitor understands, with its default.
# Generated from the schema by `monitor config example` (monitor/config/schema.py);
# edit the schema, not this file.
# Copy to monitor.toml (or /etc/monitor/monitor.toml) and keep what you need:
# a missing key takes the default shown; a missing optional section turns its checks off.
# Check it with:  monitor config check --config monitor.toml
#
# Durations: "250ms", "30s", "15m", "26h", "7d", "1h30m".  Sizes: 500 (bytes), "500KB",
# "1MB", "2GiB" (KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024).
# Relative paths resolve against this file's folder. Secrets (bot token, Vault token,
# API keys, database passwords) never live here: name an environment variable or file.
# Every URL value may hold ${NAME} placeholders, filled from the environment (an unset
# NAME is a config error); the filled-in value is masked in every output.
"""

PROFILES = """
# Profiles: [env.NAME] tables are deep-merged over everything above for --env NAME.
[env.dev.system]
cpu_percent = { warning = 95, critical = 99 }
"""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(value) -> str:
    """A value as TOML text; durations and sizes as the schema wrote them ("5s", "1B")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Threshold):
        return toml_value({"warning": value.warning, "critical": value.critical})
    if hasattr(value, "text"):  # Duration, Size
        return toml_value(value.text)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)


def comment(text: str) -> list[str]:
    return ["# " + line for line in textwrap.wrap(text, WIDTH - 2, break_long_words=False,
                                                   break_on_hyphens=False)]


def example_toml(schema: Table = SCHEMA) -> str:
    """The sample config for `schema` (a top-level Table)."""
    lines = PREAMBLE.splitlines()
    lines.append("")
    lines += _keys(schema, None)
    for key, field in schema.fields.items():
        if isinstance(field, TableList):
            lines += _table_list(key, field)
        elif isinstance(field, Table):
            lines += _table(key, field)
    lines += PROFILES.splitlines()
    return "\n".join(lines) + "\n"


def _table(path: str, table: Table) -> list[str]:
    lines = ["", *comment(table.help), f"[{path}]"]
    lines += _keys(table, None)
    for key, field in table.fields.items():
        if isinstance(field, TableList):
            raise TypeError(f"{path}.{key}: an array of tables is only written at the top level")
        if isinstance(field, Table):
            lines += _table(f"{path}.{key}", field)
    return lines


def _table_list(path: str, field: TableList) -> list[str]:
    if not field.example:
        raise ValueError(f"{path}: an array of tables needs example entries")
    lines = ["", *comment(field.help)]
    for i, (note, entry) in enumerate(field.example):
        if i:
            lines.append("")
        lines += comment(note)
        lines.append(f"[[{path}]]")
        if i == 0:
            lines += _keys(field.table, entry)
        else:
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in entry.items()]
    return lines


def _keys(table: Table, entry: dict | None) -> list[str]:
    """The scalar keys of `table`, each under its help. In a table the value shown is
    the field's example, else its default; in an array's first entry (`entry`) it is
    the entry's value, else the default, else the example commented out."""
    lines = []
    for key, field in table.fields.items():
        if isinstance(field, (Table, TableList)):
            continue
        if entry is not None:
            value = entry.get(key, field.default)
        else:
            value = field.default if field.example is None else field.example
        if value is None:
            if field.example is None:
                raise ValueError(f"{key}: no default and no example to show")
            lines += comment(field.help)
            lines.append(f"# {toml_key(key)} = {toml_value(field.example)}")
            continue
        note = field.help
        if field.default is not None and toml_value(value) != toml_value(field.default):
            note += f" Default: {toml_value(field.default)}."
        lines += comment(note)
        lines.append(f"{toml_key(key)} = {toml_value(value)}")
    return lines
