"""The report's error count takes its records straight from `logscan.error_records` (one
generator per block, issue 14): the figures must be those of the plain definition, every
candidate line of `_candidate_lines` judged by `error_record`, whatever the log holds."""

import io
import json
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from monitor import logscan
from monitor.logscan import error_record
from monitor.report.logs import _candidate_lines, count_errors
from monitor.report.window import window_for

DAY = date(2026, 11, 25)
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_LEVELS = st.sampled_from(["ERROR", "CRITICAL", "error", "critical", "Error", "Critical", "eRROR", "INFO", "", None, 3,
                           ["ERROR"], {"level": "ERROR"}, "ERROR "])
_STAMPS = st.sampled_from(["2026-11-25T10:00:00+00:00", "2026-11-25T23:30:00", "2026-11-24T23:30:00-02:00",
                           "2026-11-25 00:00:00,5", "2026-11-26T00:00:00Z", 1795600000, 1795600000123, "garbage",
                           None, True, [1], ""])
_RECORDS = st.builds(
    lambda fields, separators, ascii_only: json.dumps(dict(fields), separators=separators, ensure_ascii=ascii_only),
    st.lists(st.one_of(st.tuples(st.sampled_from(["levelname", "level"]), _LEVELS),
                       st.tuples(st.sampled_from(["asctime", "timestamp", "time"]), _STAMPS),
                       st.tuples(st.just("message"), st.sampled_from(["an error", '"level": "ERROR"', "é\u2028", ""]))),
             max_size=6),
    st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :\t")]), st.booleans()).map(str.encode)
# Around a record: white space JSON allows or not, a duplicate level key, a cut, an escape.
_EDITS = st.sampled_from([
    lambda r: r, lambda r: r, lambda r: b" " + r, lambda r: b"\x0b" + r, lambda r: r + b" \r", lambda r: r + b"\x0c",
    lambda r: r.replace(b'"levelname"', b'"levelname": "ERROR", "levelname"', 1), lambda r: r[:len(r) // 2],
    lambda r: r.replace(b"ERROR", b"\\u0045RROR"), lambda r: r + b"}"])
_WORDS = st.lists(st.sampled_from([b"ERROR", b"critical", b"Error", b" ", b"{", b"\xff", b'"level', b'": "', b'ERROR"',
                                   b"2026-11-25 10:00:00,123 ", b"[2026-11-25T23:59:59+01:00] ", b"\t", b"\r"]),
                  max_size=6).map(b"".join)
_LINES = st.one_of(st.builds(lambda edit, record: edit(record), _EDITS, _RECORDS), _WORDS)


def _reference(data: bytes, window, max_line: int) -> dict:
    """The figures by their plain definition: each candidate line, each judged on its own."""
    counts, unparseable = {"ERROR": 0, "CRITICAL": 0}, 0
    for line in _candidate_lines(io.BytesIO(data), max_line=max_line):
        record = error_record(line, window.start.tzinfo)
        if record is None:
            continue
        if record[1] is None:
            unparseable += 1
        elif window.start <= record[1] < window.end:
            counts[record[0]] += 1
    return {"error": counts["ERROR"], "critical": counts["CRITICAL"], "unparseable_lines": unparseable}


@settings(max_examples=300, **FAST)
@given(lines=st.lists(_LINES, max_size=25), lead=st.sampled_from([b"", b"\n", b"  \n\t", b"plain "]),
       end=st.sampled_from([b"", b"\n"]), max_line=st.sampled_from([12, 60, 1 << 20]),
       tz=st.sampled_from([timezone.utc, ZoneInfo("UTC"), ZoneInfo("Europe/Paris")]))
@example(lines=[b'{"levelname": "ERROR", "asctime": "2026-11-25T10:00:00Z"}'], lead=b"", end=b"", max_line=1 << 20,
         tz=timezone.utc)
def test_the_error_count_is_each_candidate_line_judged_on_its_own(tmp_path, lines, lead, end, max_line, tz):
    data = lead + b"\n".join(lines) + end
    path = tmp_path / "app.log"
    path.write_bytes(data)
    window = window_for(DAY, tz)
    found = count_errors([str(path)], window, max_line=max_line)
    expected = _reference(data, window, max_line)
    assert {key: found[key] for key in expected} == expected
    assert found["count"] == expected["error"] + expected["critical"]
    assert found["per_file"] == ({str(path): found["count"]} if found["count"] else {})


@settings(max_examples=300, **FAST)
@given(record=_RECORDS, before=st.sampled_from([b"", b" ", b"\t", b"\r", b"\x0b", b"\x0c", b" \x0b"]),
       after=st.sampled_from([b"", b" ", b"\r", b"\t ", b"\x0b", b"x", b"}"]))
def test_a_json_line_with_white_space_around_is_a_record_exactly_when_json_loads_reads_it(record, before, after):
    line = before + record + after
    got = error_record(line, timezone.utc)
    try:
        value = json.loads(line.decode("utf-8", "surrogatepass"))
    except ValueError:
        assert got == ("?", None)
        return
    level = str(value.get("levelname") or value.get("level") or "").upper()
    assert (got is not None and got[0]) == (level in ("ERROR", "CRITICAL") and level)


def test_a_verbose_pattern_ending_in_a_comment_still_counts_its_lines():
    """`(?x) ERROR  # a comment` passed config validation, then failed every run once wrapped."""
    import re

    from monitor import logscan

    data = b"a\nx ERROR y\nb\n"
    for pattern in (re.compile(rb"(?x) ERROR  # an error"), re.compile(rb"ERROR", re.X)):
        assert logscan.count_block(data, 0, len(data), False, pattern) == (3, 1, (2, 11))


# The plain rule (issue 15): the FIRST level word of a line's head decides; a logfmt
# `level=` field counts where it stands. (line, level, time) as `error_record` reads them.
UTC = timezone.utc
AT = "2026-11-25T10:00:00+00:00"
PLAIN_FORMATS = [
    # Python's logging: "%(asctime)s - %(name)s - %(levelname)s - %(message)s", and without dashes
    (b"2026-11-25 10:00:00,123 - scraper - ERROR - fetch failed", "ERROR", "2026-11-25T10:00:00.123+00:00"),
    (b"2026-11-25 10:00:00 scraper ERROR fetch failed", "ERROR", AT),
    # logging.basicConfig's default "%(levelname)s:%(name)s:%(message)s": no time
    (b"ERROR:scraper:fetch failed", "ERROR", None),
    (b"CRITICAL:root:database gone", "CRITICAL", None),
    # syslog (no year: no time the report can place)
    (b"Dec  1 10:00:00 vps-1 scraper[12]: ERROR fetch failed", "ERROR", None),
    # logfmt (logrus, go-kit), any case
    (b'time=2026-11-25T10:00:00Z level=error msg="fetch failed"', "ERROR", AT),
    (b'ts=2026-11-25T10:00:00Z level=FATAL msg="out of memory"', "CRITICAL", AT),
    # as before: a time, then the level (in brackets; zap's console writes it in lower case)
    (b"2026-11-25 10:00:00 [ERROR] fetch failed", "ERROR", AT),
    (b"[2026-11-25T10:00:00Z] CRITICAL database gone", "CRITICAL", AT),
    (b"2026-11-25T10:00:00Z\terror\tfetch failed", "ERROR", AT),
    (b"2026-11-25 10:00:00 scraper FATAL out of memory", "CRITICAL", AT),
    # not errors: another level comes first, or the line continues a record, or no level word
    (b"INFO retrying after ERROR", None, None),
    (b"2026-11-25 10:00:00,123 - scraper - INFO - retrying after ERROR", None, None),
    (b"Dec  1 10:00:00 vps-1 scraper[12]: WARNING an ERROR ahead", None, None),
    (b'time=2026-11-25T10:00:00Z level=info msg="ERROR in the payload"', None, None),
    (b'2026-11-25 10:00:00 DEBUG level=error is the threshold now', None, None),
    (b'  File "scraper.py", line 3, in fetch  # ERROR', None, None),
    (b"Traceback (most recent call last):", None, None),
    (b"2026-11-25 10:00:00 ERRORS: 0", None, None),
    (b"2026-11-25 10:00:00 scraper error_count=3", None, None),
    (b"x" * 200 + b" ERROR beyond the head of the line", None, None),
]


@pytest.mark.parametrize("line, level, at", PLAIN_FORMATS, ids=[f[0][:48].decode() for f in PLAIN_FORMATS])
def test_a_plain_line_is_an_error_by_the_first_level_word_of_its_head(line, level, at):
    expected = None if level is None else (level, datetime.fromisoformat(at) if at else None)
    assert error_record(line, UTC) == expected
    assert logscan.is_error_line(line) is (level is not None)


def test_the_report_counts_plain_errors_of_every_format_and_those_without_a_time_as_unparseable(tmp_path):
    path = tmp_path / "scraper.log"
    path.write_bytes(b"\n".join(line for line, _, _ in PLAIN_FORMATS) + b"\n")
    found = count_errors([str(path)], window_for(DAY, UTC))
    timed = [level for _, level, at in PLAIN_FORMATS if level and at]
    assert (found["error"], found["critical"]) == (timed.count("ERROR"), timed.count("CRITICAL")) == (5, 3)
    assert found["unparseable_lines"] == sum(1 for _, level, at in PLAIN_FORMATS if level and not at) == 3


def test_a_json_record_in_a_plain_text_log_is_judged_by_its_level_field():
    data = (b"starting scraper v2 (stderr)\n"
            b'{"levelname": "ERROR", "message": "x"}\n'
            b'{"levelname": "INFO", "message": "an ERROR mentioned"}\n'
            b"ERROR:scraper:plain\n")
    records, errors, last = logscan.count_block(data, 0, len(data), False)
    assert (records, errors, data[last[0]:last[1]]) == (4, 2, b"ERROR:scraper:plain")


NESTED = [
    (b'{"levelname": "INFO", "message": "retrying", "upstream": {"level": "error"}}', False),
    (b'{"level": "info", "response": {"levelname": "ERROR", "code": 502}}', False),
    (b'{"level": "info", "events": [{"level": "error"}]}', False),
    (b'  {"upstream": {"level": "error"}, "level": "error"}', True),
    (b'{"level": "Critical", "msg": "x"}', True),
    (b'["level": "error"]', False),
    (b'{"levelname": "INFO", "level": "error"}', False),  # levelname first, as error_record reads it
    (b'{"loglevel": "error", "level": "info"}', False),
    (b'{"level": "error"} trailing', True),  # does not parse: its level field counts
    # A level that is a list or an object is no level (it raised TypeError: unhashable).
    (b'{"level": ["ERROR"], "x": {"level": "error"}}', False),
    (b'{"level": {"level": "error"}, "msg": "level"}', False),
    (b'{"loglevel": "ERROR"}', False),  # "level" inside another key: no flat short cut
    (b'{"msg": "a{b", "level": "error"}', True),  # a "{" in a string before it: parsed, still an error
]


@pytest.mark.parametrize("line, error", NESTED)
def test_a_json_line_is_an_error_by_its_top_level_level_for_the_check_as_for_the_report(line, error):
    assert (error_record(line, UTC) is not None) is error
    for json_lines in (True, False):  # a JSON-lines log, and a JSON record in a plain log
        data = b'{"level": "info"}\n' + line + b"\n"
        assert logscan.count_block(data, 0, len(data), json_lines)[1] == error


def test_a_json_line_cut_at_the_line_cap_still_counts_by_its_level_field():
    line = b'{"levelname": "ERROR", "message": "' + b"x" * 100
    assert logscan.count_block(line + b"\n", 0, len(line) + 1, True)[1] == 1


def test_blocks_read_within_a_limit_never_take_part_of_a_line():
    """A line the limit cuts is left whole for the next reader (issue 15: it was counted as
    an over-long line and the offset landed inside it)."""
    data = b"".join(b"%03d " % i + b"y" * 220 + b"\n" for i in range(6))  # 225-byte lines
    for limit in (1, 224, 225, 226, 700, 1024):
        blocks = logscan.Blocks(io.BytesIO(data), 1024, limit=limit, partial_last=False)
        taken = b"".join(bytes(buf[lo:hi]) for buf, lo, hi in blocks)
        assert taken == data[:limit // 225 * 225] and blocks.consumed == len(taken), limit
        assert blocks.exhausted


def test_a_line_longer_than_the_buffer_is_one_record_and_its_rest_skipped_across_reads():
    data = b"head " + b"z" * 3000 + b"\nnext\n"
    first = logscan.Blocks(io.BytesIO(data), 1024, limit=2048, partial_last=False)
    assert [bytes(buf[lo:hi]) for buf, lo, hi in first] == [data[:1024]]
    assert first.skipping and first.consumed == 2048
    rest = logscan.Blocks(io.BytesIO(data[2048:]), 1024, limit=2048, partial_last=False, skipping=True)
    assert [bytes(buf[lo:hi]) for buf, lo, hi in rest] == [b"next\n"] and not rest.skipping
