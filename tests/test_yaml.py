"""The hand-written YAML emitter (monitor/fleet/yaml.py) against PyYAML's reader.

`monitor render rules` writes YAML without PyYAML (not on the cron path, and no runtime
dependency); these tests hold it to what `yaml.safe_load` reads back, for any nesting of
dicts, lists and scalars, and for the committed rules.
"""

import math

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor import config as monitor_config
from monitor.fleet import rules as render_rules
from monitor.fleet.yaml import to_yaml, yaml_scalar

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text())
KEYS = st.text()
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=24)
DOCUMENTS = st.dictionaries(KEYS, NESTED, max_size=5) | st.lists(NESTED, max_size=5)


def tagged(value):
    """`value` with each scalar tagged by its kind: `True == 1` and `1 == 1.0` in Python, but
    a bool must read back as a bool; an integral float may read back as an int (80.0 is
    written 80, as PromQL reads it)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, dict):
        return {tagged(k): tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    return (type(value).__name__, value)


def read_back(lines: list[str]):
    return yaml.safe_load("\n".join(lines) + "\n")


@settings(max_examples=500, deadline=None)
@given(DOCUMENTS)
@example({"on": "off", "<<": "=", "": [[], {}, [[1]]], "k" * 1100: None, "\u2028": "\x85"})
@example(["._", "0.", 1e-13, 0.1 + 0.2, 2**64 + 1, -0.0, math.inf, -math.inf, "\x85", "\u2028", "\x80 ✅\n"])
def test_any_document_reads_back_as_it_was(document):
    assert tagged(read_back(to_yaml(document))) == tagged(document)


@settings(max_examples=500, deadline=None)
@given(SCALARS)
def test_any_scalar_reads_back_as_it_was(value):
    assert tagged(yaml.safe_load(f"k: {yaml_scalar(value)}\n")["k"]) == tagged(value)
    assert tagged(yaml.safe_load(f"- {yaml_scalar(value)}\n")[0]) == tagged(value)


def test_nan_is_written_as_yaml_nan():
    assert math.isnan(yaml.safe_load(f"k: {yaml_scalar(math.nan)}\n")["k"])


def test_the_rules_read_back_as_rendered(tmp_path):
    defaults = monitor_config.build({}, None, str(tmp_path))
    assert yaml.safe_load(render_rules.rules_yaml(defaults)) == render_rules.rules(defaults)
