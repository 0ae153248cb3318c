"""A strict reader of Nagios plugin output, written from the plugin guidelines
(nagios-plugins.org/doc/guidelines.html, "Plugin Output" and "Performance data"), not
from monitor's code: what it accepts a Nagios core, Icinga or a grapher accepts.

    'label'=value[UOM];[warn];[crit];[min];[max]

- data are separated by spaces; a label with spaces must be quoted with ', and a '
  inside it is written ''; a label holds no = (and no ' unquoted)
- value, min and max are in the class [-0-9.] (or U: value unknown)
- UOM is none, s, ms, us, %, B, KB, MB, TB or c
- warn and crit are ranges ([@]start:end, ~ for minus infinity), parsed here by
  nagiosplugin's `Range`, an independent implementation of the range format
"""

import re
from typing import NamedTuple

import nagiosplugin

UOMS = ("s", "ms", "us", "%", "B", "KB", "MB", "TB", "c")
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_RANGE = r"@?(?:~|" + _NUMBER + r")?:?(?:" + _NUMBER + r")?"
_DATUM = re.compile(
    r"(?:'(?P<quoted>(?:[^'=]|'')+)'|(?P<bare>[^'= ]+))"
    rf"=(?P<value>{_NUMBER}|U)(?P<uom>{'|'.join(sorted(UOMS, key=len, reverse=True))})?"
    rf"(?:;(?P<warn>{_RANGE})(?:;(?P<crit>{_RANGE})(?:;(?P<min>{_NUMBER})?(?:;(?P<max>{_NUMBER})?)?)?)?)?"
)


class Datum(NamedTuple):
    label: str
    value: float | None
    uom: str
    warn: nagiosplugin.Range | None
    crit: nagiosplugin.Range | None
    min: float | None
    max: float | None


class PluginOutput(NamedTuple):
    status_line: str  # the first line before `|`
    perfdata: list  # of Datum
    long_lines: list  # the lines after the first


def _number(text):
    return None if text in (None, "", "U") else float(text)


def _range(text):
    return nagiosplugin.Range(text) if text else None


def parse_perfdata(text: str) -> list[Datum]:
    """Every datum of a perfdata string; AssertionError on anything the grammar refuses."""
    data, pos = [], 0
    while pos < len(text):
        match = _DATUM.match(text, pos)
        assert match, f"not a performance datum at {text[pos:pos + 80]!r}"
        end = match.end()
        assert end == len(text) or text[end] == " ", f"datum not followed by a space: {text[pos:end + 20]!r}"
        label = match["quoted"].replace("''", "'") if match["quoted"] is not None else match["bare"]
        data.append(Datum(label, _number(match["value"]), match["uom"] or "", _range(match["warn"]),
                          _range(match["crit"]), _number(match["min"]), _number(match["max"])))
        pos = end + 1
    return data


def parse_output(text: str) -> PluginOutput:
    """A plugin's whole output: status line, its performance data, the long output lines."""
    first, *rest = text.split("\n")
    status, bar, perf = first.partition("|")
    assert all("|" not in line for line in rest), "a | in the long output would start performance data"
    return PluginOutput(status.rstrip(), parse_perfdata(perf.strip()) if bar else [], rest)
