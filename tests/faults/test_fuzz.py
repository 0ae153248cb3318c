"""Fuzzing with hypothesis: what parses untrusted text fails only in the documented way.

- the config loader: documents built from the schema's own keys (and some that are
  not), with values of every TOML type, plausible or not, serialized to TOML and
  loaded: a valid config or `ConfigError`, nothing else; random bytes through the CLI:
  exit 3 with `config error:` lines, never a traceback;
- `parse_duration`/`parse_size`: a finite, non-negative value or ValueError;
- the report's log-line parser (`error_record`): None or a (level, time) tuple;
- the report's line scanner (`_candidate_lines`) against a plain reference;
- the Telegram splitter: chunks within 4096 UTF-16 units, tags balanced in each,
  the visible text unchanged.
Example counts are set per target (`max_examples`) and listed in the module's report.
"""

import html
import io
import json
import math
import re
import subprocess
from datetime import timezone

import pytest

from hypothesis import HealthCheck, example, given, settings, strategies as st

from monitor import config as config_mod
from monitor.config import SCHEMA, ConfigError, ListOf, Table, TableList, ThresholdField
from monitor.report.logs import _LEVEL_FIELD, _candidate_lines, error_record
from monitor.alerts.telegram import LIMIT, html_to_plain, split_message, units
from monitor.units import parse_duration, parse_size
from tests.conftest import MONITOR, clean_env
from tests.telegram_standin import html_error

FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- random config documents ------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
_PLAUSIBLE = st.sampled_from([
    "5s", "0s", "15m", "1h30m", "7d", "2w", "250ms", "1.5s", "-1s", "fast", "", " ", "10", "5 s",
    "1MB", "2GiB", "500KB", "0B", "1e3MB", "-5MB", "http://127.0.0.1:1/health", "https://", "ftp://x",
    "sqlite:///tmp/x.db", "postgresql://u:p@h/db", "UTC", "Europe/Paris", "Mars/Olympus", "../../etc/passwd",
    "logs", "~/x", "/", "env:API_KEY", "env:", "[", "(a|", ".*", "secret/monitor#telegram_token", "dev",
    "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123", "hvs.ABCDEFGHIJKLMNOPQRSTUVWX", "none", "gzip", "iso",
    "epoch", "-1001234567890", "@channel_name", "\x00", "é", "🚀",
])
_NUMBERS = (st.integers(-(2 ** 63), 2 ** 63 - 1) | st.floats() | st.sampled_from([0, 1, -1, 100, 101, 0.5]))
_SCALARS = (_PLAUSIBLE | _TEXT | _NUMBERS | st.booleans() | st.datetimes() | st.dates() | st.times())
_ANY = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(_TEXT | _PLAUSIBLE, inner, max_size=3), max_leaves=8)


def _for(field):
    """Values for one schema field: its own shape most of the time, anything sometimes."""
    if isinstance(field, Table):
        return _table(field) | _ANY
    if isinstance(field, TableList):
        return st.lists(_table(field.table), max_size=3) | _ANY
    if isinstance(field, ThresholdField):
        return st.fixed_dictionaries({}, optional={"warning": _SCALARS, "critical": _SCALARS,
                                                   "extra": _SCALARS}) | _ANY
    if isinstance(field, ListOf):
        return st.lists(_SCALARS, max_size=3) | _ANY
    return _SCALARS | _ANY


def _table(table: Table):
    optional = {key: st.deferred(lambda f=field: _for(f)) for key, field in table.fields.items()}
    optional["unknown_key"] = _SCALARS
    return st.fixed_dictionaries({}, optional=optional)


_PROFILE = st.deferred(lambda: _table(SCHEMA))
DOCUMENTS = st.tuples(_table(SCHEMA), st.none() | st.dictionaries(st.sampled_from(["dev", "prod", "x y", ""]),
                                                                   _PROFILE | _ANY, max_size=2)).map(
    lambda pair: {**pair[0], **({"env": pair[1]} if pair[1] is not None else {})})
ENVS = st.none() | st.sampled_from(["dev", "prod", "staging"]) | _TEXT


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    return json.dumps(text).replace("\x7f", "\\u007f")  # JSON escapes are TOML escapes


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return value.isoformat()  # datetime, date, time


def to_toml(document: dict) -> str:
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in document.items())


def _valid_or_config_error(load):
    try:
        config = load()
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
        return None
    json.dumps(config_mod.display(config), default=str)  # what `config check` prints
    return config


@settings(max_examples=400, **FAST)
@given(document=DOCUMENTS, env=ENVS)
@example(document={"environment": [1]}, env=None)
@example(document={"environment": {"a": 1}}, env=None)
@example(document={"env": {"x; touch /tmp/p #": {}}}, env="x; touch /tmp/p #")
def test_any_config_document_is_valid_or_a_config_error(tmp_path_factory, document, env):
    _valid_or_config_error(lambda: config_mod.build(document, env, "/srv/monitor", "/srv/monitor/monitor.toml"))


def test_a_document_nested_past_the_stack_is_a_config_error():
    # (Not a hypothesis example: its printer recurses over such a value.)
    document = {}
    for _ in range(100_000):
        document = {"a": document}
    with pytest.raises(ConfigError) as info:
        config_mod.build({"system": document}, None, "/srv/monitor", "/srv/monitor/monitor.toml")
    assert info.value.errors == ["/srv/monitor/monitor.toml: nested more than 32 levels deep (system"
                                 + ".a" * 32 + ")"]


@settings(max_examples=200, **FAST)
@given(document=DOCUMENTS, env=ENVS)
def test_any_toml_file_of_schema_keys_loads_or_is_a_config_error(tmp_path_factory, document, env):
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_text(to_toml(document), encoding="utf-8")
    _valid_or_config_error(lambda: config_mod.load(str(path), env))


@settings(max_examples=8, **FAST)
@given(raw=st.binary(min_size=1, max_size=300))
@example(raw=b"environment = [1]\n")
@example(raw=b"\xff\xfe[system]\n")
@example(raw=b"a = " + b"{a = " * 100_000 + b"1" + b"}" * 100_000)  # issue 12: nested past the stack
@example(raw=b"[" + b".".join([b"a"] * 100_000) + b"]\n")  # a header tomllib takes minutes over
def test_random_bytes_as_the_config_file_exit_3_with_config_errors_not_a_traceback(tmp_path_factory, raw):
    path = tmp_path_factory.getbasetemp() / "random.toml"
    path.write_bytes(raw)
    try:
        config_mod.load(str(path))
        valid = True
    except ConfigError:
        valid = False
    proc = subprocess.run([MONITOR, "config", "check", "--format", "json", "--config", str(path)],
                          env=clean_env(), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr
    if valid:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 3 and proc.stdout == ""
        assert proc.stderr and all(line.startswith("config error: ") for line in proc.stderr.splitlines())


# --- durations and sizes -----------------------------------------------------------------------

_UNITS_TEXT = (st.from_regex(r"\s?[0-9٣.]{0,420}\s?(ms|s|m|h|d|w|b|kb|MB|GiB|TiB|x|)(\d{0,3}[smhd])?\s?", fullmatch=True)
               | _TEXT)
_UNIT_INPUTS = _UNITS_TEXT | st.integers() | st.floats() | st.none() | st.booleans() | st.lists(st.integers())


def _finite_or_value_error(parse, value):
    try:
        result = parse(value)
    except ValueError:
        return
    assert math.isfinite(result) and result >= 0, (value, result)


@settings(max_examples=500, **FAST)
@given(value=_UNIT_INPUTS)
@example(value="1" * 400 + ".5s")
@example(value="9" * 5000 + "s")
def test_parse_duration_returns_a_finite_duration_or_raises_value_error(value):
    _finite_or_value_error(parse_duration, value)


@settings(max_examples=500, **FAST)
@given(value=_UNIT_INPUTS)
@example(value="1" * 400 + ".5GB")
@example(value="9" * 5000)
@example(value=-1)
def test_parse_size_returns_a_finite_size_or_raises_value_error(value):
    _finite_or_value_error(parse_size, value)


# --- the report's log parser ----------------------------------------------------------------

_STAMPS = (_TEXT | st.integers(-(10 ** 300), 10 ** 300) | st.floats() | st.none() | st.booleans()
           | st.datetimes().map(lambda d: d.isoformat()) | st.lists(st.integers(), max_size=2))
_RECORDS = st.fixed_dictionaries({}, optional={
    "levelname": st.sampled_from(["ERROR", "CRITICAL", "error", "WARNING", ""]) | _TEXT,
    "level": st.sampled_from(["error", "critical"]) | _ANY,
    "asctime": _STAMPS, "timestamp": _STAMPS, "time": _STAMPS, "message": _TEXT,
}).map(lambda r: json.dumps(r, default=str).encode())
_PLAIN_LINES = st.builds(lambda stamp, sep, level, rest: f"{stamp}{sep}{level}{rest}".encode("utf-8", "replace"),
                         st.datetimes().map(lambda d: d.isoformat(sep=" ")) | _TEXT,
                         st.sampled_from([" ", " - ", "] [", "|", ""]),
                         st.sampled_from(["ERROR", "CRITICAL", "error", "Critical", "INFO"]), _TEXT)
_LINES = (st.binary(max_size=200) | _RECORDS | _PLAIN_LINES
          | st.builds(lambda head, n: head + b"x" * n, _RECORDS | _PLAIN_LINES, st.integers(0, 300_000)))


@settings(max_examples=500, **FAST)
@given(line=_LINES)
@example(line=b'{"levelname": "ERROR", "asctime": ' + b"[" * 5_000)  # nested past the stack
@example(line=b'{"levelname": "ERROR", "asctime": 1' + b"0" * 400 + b"}")  # too large for a float
def test_the_log_line_parser_returns_none_or_a_level_and_time_and_never_raises(line):
    record = error_record(line, timezone.utc)
    assert record is None or (isinstance(record, tuple) and len(record) == 2 and record[0] in ("ERROR", "CRITICAL", "?"))


# What makes a plain-text line a candidate (logscan.HINTS): every spelling the plain rule can
# call an error (upper case anywhere; lower and title case after a time or in logfmt's
# level=), and the JSON spellings of a level field.
_LEVELS = (b"ERROR", b"CRITICAL", b"FATAL", b"ALERT", b"EMERG", b"rror", b"ritical", b"atal")
_LOG_WORDS = st.sampled_from([b"ERROR", b"CRITICAL", b"error", b"critical", b"ERR", b"OR", b"INFO", b" ", b"x",
                              b"FATAL", b"Fatal", b"ALERT", b"EMERG", b"level=",
                              b"{", b"\r", b"\xff", b'"level', b"name", b'"', b': "', b":\t\"", b'ERROR"', b'Error"',
                              b'INFO"', b'"levelname": "ERROR"', b'"level":"critical"'])
_LOG_LINES = (st.lists(st.lists(_LOG_WORDS, max_size=6).map(b"".join), max_size=30)
              | st.lists(st.lists(_LOG_WORDS, max_size=6).map(lambda words: b"{" + b"".join(words)), max_size=30))


def _reference(data: bytes, max_line: int) -> tuple[list[bytes], list[bytes]]:
    """(lines that must be yielded, lines that may be), each cut to `max_line`.

    A log that starts with "{" is JSON lines: a line holds a level when its level field
    says so (issue 14: not a level word in its message); any other log, a level word.
    """
    if data.lstrip(b" \t\r\n").startswith(b"{"):
        def holds(line):
            return _LEVEL_FIELD.search(line) is not None
    else:
        def holds(line):
            return any(level in line for level in _LEVELS)
    lines = data.split(b"\n")
    must = [line[:max_line] for line in lines if holds(line[:max_line])]
    may = [line[:max_line] for line in lines if holds(line)]
    return must, may


@settings(max_examples=400, **FAST)
@given(lines=_LOG_LINES, newline_at_end=st.booleans(), chunk=st.integers(1, 80))
def test_the_line_scanner_yields_exactly_the_lines_holding_a_level_whatever_the_chunk_size(lines, newline_at_end,
                                                                                          chunk):
    data = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    expected, _ = _reference(data, len(data) + 1)
    assert list(_candidate_lines(io.BytesIO(data), chunk_size=chunk, max_line=len(data) + 1)) == expected


@settings(max_examples=200, **FAST)
@given(lines=_LOG_LINES, chunk=st.integers(1, 80), max_line=st.integers(1, 40))
def test_the_line_scanner_cuts_long_lines_and_still_finds_a_level_in_their_first_bytes(lines, chunk, max_line):
    data = b"\n".join(lines)
    must, may = _reference(data, max_line)
    got = list(_candidate_lines(io.BytesIO(data), chunk_size=chunk, max_line=max_line))
    assert all(len(line) <= max_line for line in got)
    # `got` is `may` with some of the lines not in `must` left out, in order.
    position = 0
    for line in may:
        if position < len(got) and got[position] == line:
            position += 1
        else:
            assert line not in must or line in got[:position], (line, got)
    assert position == len(got), got


# --- the Telegram splitter --------------------------------------------------------------------

_MESSAGE_TEXT = st.lists(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")
                        | st.sampled_from(["<", ">", "&", "&amp;", "<b>", "🚨", "⚠️", "✅", "👨‍👩‍👧", "𝄞", '"', "'"]),
                        max_size=60).map("".join)


def _compose(lines: list[str]) -> str:
    return "\n".join(f"<b>{html.escape(line)}</b>" for line in lines)


def _assert_chunks_fit(chunks: list[str]):
    for chunk in chunks:
        assert units(chunk) <= LIMIT, units(chunk)
        assert html_error(chunk) is None, (html_error(chunk), chunk[:200])


@settings(max_examples=300, **FAST)
@given(lines=st.lists(_MESSAGE_TEXT.filter(lambda t: len(t) <= 300), max_size=120))
@example(lines=["🚨 <disk:/> & " * 20] * 100)
def test_split_lines_stay_under_4096_units_balanced_and_join_back_to_the_same_visible_text(lines):
    message = _compose(lines)
    chunks = split_message(message)
    _assert_chunks_fit(chunks)
    assert html_to_plain("\n".join(chunks)) == html_to_plain(message)


@settings(max_examples=200, **FAST)
@given(lines=st.lists(st.builds(lambda text, n: text * n, _MESSAGE_TEXT.filter(bool), st.integers(1, 400)),
                      min_size=1, max_size=3))
@example(lines=["&<🚨>𝄞" * 3000, "x"])
def test_a_line_longer_than_the_limit_is_cut_between_characters_never_inside_a_tag_or_entity(lines):
    message = _compose(lines)
    chunks = split_message(message)
    _assert_chunks_fit(chunks)
    # A cut adds a chunk boundary where the line had none: compare without line breaks.
    assert html_to_plain("".join(chunks)).replace("\n", "") == html_to_plain(message).replace("\n", "")


# --- printable text (issue 11, item 3) --------------------------------------------------------

_HOSTILE_TEXT = (st.binary(max_size=60).map(lambda raw: raw.decode("utf-8", "surrogateescape"))
                 | st.text(max_size=60)
                 | st.text(st.sampled_from("a\\\x00\x1b[\x07\x7f\x85\x9b\n\r\t\u2028\u202e\u2066\udcff\ud800é🚀"),
                           max_size=30))


@settings(max_examples=500, **FAST)
@given(text=_HOSTILE_TEXT)
def test_printable_text_is_utf8_has_no_control_or_bidi_character_and_is_stable(text):
    from monitor.text import printable

    shown = printable(text)
    shown.encode("utf-8")  # no lone surrogate left
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", shown)
    assert printable(shown) == shown
    if text.isprintable():
        assert shown == text  # ordinary text is left alone


@settings(max_examples=200, **FAST)
@given(check_id=_HOSTILE_TEXT, message=_HOSTILE_TEXT, host=_HOSTILE_TEXT)
def test_an_alert_about_hostile_names_always_makes_valid_telegram_chunks(check_id, message, host):
    from monitor.alerts import messages
    from monitor.alerts.state import Alert
    from monitor.results import Result, with_identity

    result = with_identity(Result("critical", message, value=1.0, unit="%", warning=0, critical=0), check_id,
                           "backup", 1.0)
    text = messages.compose([Alert(check_id, "critical", result, 0.0, 60.0)], host, "prod", 60.0)
    for chunk in split_message(text):
        chunk.encode("utf-8")
        assert units(chunk) <= LIMIT and html_error(chunk) is None
