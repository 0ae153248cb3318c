"""`[[logfiles]]`: the `log:<name>` checks read what was appended since the previous run."""

import gzip
import json
import os
import shutil
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from monitor import config as monitor_config
from monitor.checks import logfiles
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING
from monitor.state import Carried
from tests.test_logscan import PLAIN_FORMATS

UTC = timezone.utc
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def entry(tmp_path, **keys):
    """One [[logfiles]] entry as the config builds it (a key given None is left out)."""
    keys = {"name": "app", "path": "app.log", "errors_per_minute": {"warning": 1, "critical": 10}, **keys}
    keys = {key: value for key, value in keys.items() if value is not None}
    return monitor_config.build({"logfiles": [keys]}, None, str(tmp_path))["logfiles"][0]


def record(level, at, message="x"):
    return json.dumps({"levelname": level, "asctime": datetime.fromtimestamp(at, UTC).isoformat(),
                       "message": message}) + "\n"


class Runs:
    """Consecutive health runs: each starts from what the previous one saved."""

    def __init__(self, cfg):
        self.cfg, self.saved = cfg, {}

    def run(self, at):
        carried = Carried(self.saved)
        result = logfiles.logfile(self.cfg, carried, now=lambda: at, tz=UTC)
        self.saved = carried.to_write(True)
        return result


def saved_file(runs, path):
    """The carried state of one file, found by the path it was last read under."""
    return next(e for e in runs.saved["log:app"]["files"].values() if e["path"] == str(path))


def append(path, text):
    with open(path, "ab") as handle:
        handle.write(text if isinstance(text, bytes) else text.encode())


def test_each_run_counts_only_what_was_appended_since_the_previous_one(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("ERROR", T0 - 3600) + record("INFO", T0 - 60) + record("ERROR", T0 - 30))
    runs = Runs(entry(tmp_path))
    first = runs.run(T0)
    # The hour-old error is outside initial_window (5m): an old log does not page.
    assert (first.details["errors"], first.details["records"], first.details["window_seconds"]) == (1, 2, 300)
    append(log, "".join(record("ERROR" if i < 3 else "INFO", T0 + i) for i in range(10)))
    second = runs.run(T0 + 300)
    assert (second.details["errors"], second.details["records"]) == (3, 10)
    assert second.details["errors_per_minute"] == 0.6 and second.status == OK
    assert runs.run(T0 + 600).details["errors"] == 0  # nothing new


def test_errors_per_minute_and_error_ratio_judge_the_new_records(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path, error_ratio={"warning": 0.1, "critical": 0.5}))
    runs.run(T0)
    append(log, "".join(record("ERROR" if i % 5 == 0 else "INFO", T0 + i) for i in range(50)))  # 10 of 50
    result = runs.run(T0 + 300)
    assert (result.details["errors_per_minute"], result.details["error_ratio"]) == (2.0, 0.2)
    assert result.status == WARNING and "10 error(s) in 50 record(s) over 5m" in result.message
    append(log, "".join(record("ERROR", T0 + 300 + i) for i in range(120)))
    assert runs.run(T0 + 600).status == CRITICAL


def test_a_line_still_being_written_is_counted_once_it_is_complete(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    whole = record("ERROR", T0 + 1)
    append(log, record("INFO", T0) + whole[:20])
    assert (runs.run(T0 + 300).details["errors"], saved_file(runs, log)["offset"]) == \
        (0, len(record("INFO", T0)))
    append(log, whole[20:])
    assert runs.run(T0 + 600).details["errors"] == 1


def test_a_log_renamed_away_is_finished_from_its_old_name_then_the_new_one_read(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 10) + record("ERROR", T0 + 20))  # written before logrotate ran
    os.rename(log, tmp_path / "app.log.1")
    log.write_text(record("ERROR", T0 + 30) + record("INFO", T0 + 40))
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (3, 4)
    append(log, record("ERROR", T0 + 310))
    assert runs.run(T0 + 600).details["errors"] == 1


def test_a_log_renamed_away_with_more_than_max_bytes_left_is_finished_over_the_next_runs(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path, max_bytes="1MB"))
    runs.run(T0)
    append(log, "".join(record("ERROR" if i % 4 == 0 else "INFO", T0 + i, "y" * 200) for i in range(8_000)))
    os.rename(log, tmp_path / "app.log.1")  # ~2 MB written before logrotate ran
    log.write_text(record("ERROR", T0 + 9_000) + "a partial line of the new file")
    seen = [runs.run(T0 + 300 * i) for i in range(1, 5)]
    assert "next run" in seen[0].message
    assert sum(r.details["errors"] for r in seen) == 2_000 + 1  # every error of both files, once
    assert max(r.details["bytes_read"] for r in seen) <= 1_000_000


def test_a_log_truncated_in_place_is_read_again_from_its_start(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0) * 20)
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    with open(log, "r+b") as handle:  # logrotate's copytruncate
        handle.truncate(0)
    append(log, record("ERROR", T0 + 100))
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (1, 1)


def test_the_first_run_on_a_2_gb_log_reads_its_last_megabyte_in_bounded_memory(tmp_path):
    log = tmp_path / "app.log"
    with open(log, "wb") as handle:  # sparse: 2 GB of zeros, then the recent records
        handle.truncate(2 << 30)
        handle.seek(2 << 30)
        handle.write(("\n" + "".join(record("ERROR" if i % 10 == 0 else "INFO", T0 - 100 + i) for i in range(100))).encode())
    runs = Runs(entry(tmp_path))
    tracemalloc.start()
    try:
        result = runs.run(T0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.details["errors"], result.details["records"]) == (10, 100)
    assert result.details["bytes_read"] <= logfiles.FIRST_RUN_TAIL
    assert peak < 16 << 20, peak  # one 1 MB buffer and its copies, not the file


def test_at_most_max_bytes_are_read_per_run_and_the_rest_by_the_next(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path, max_bytes="1MB"))
    runs.run(T0)
    lines = [record("ERROR" if i % 4 == 0 else "INFO", T0 + i, "y" * 200) for i in range(12_000)]  # ~3 MB
    append(log, "".join(lines))
    seen, bytes_read = 0, []
    for i in range(1, 6):
        result = runs.run(T0 + 300 * i)
        seen += result.details["errors"]
        bytes_read.append(result.details["bytes_read"])
        if i == 1:
            assert "not read yet" in result.message and "next run" in result.message
    assert max(bytes_read) <= 1_000_000 and seen == 3000


def test_a_plain_text_log_with_bytes_that_are_not_utf8_shows_its_last_error_printable_and_masked(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, b"2026-11-25 12:01:00 INFO caf\xe9 \xff\xfe ok\n"
                b"2026-11-25 12:02:00 ERROR vault said hvs.ABCDEFGHIJKLMNOPQRSTUVWX \x1b[31m\xff" + b"z" * 900 + b"\n"
                b"  a traceback line mentioning ERROR\n")
    result = runs.run(T0 + 300)
    last = result.details["last_error"]
    assert (result.details["errors"], result.details["records"]) == (1, 3)
    assert "hvs.ABCDEFGHIJKLMNOPQRSTUVWX" not in last and "\x1b" not in last and "\\x1b" in last
    assert last.isprintable() and len(last) <= logfiles.LAST_LINE_CHARS


def test_a_glob_counts_every_file_and_a_pattern_replaces_the_level_detection(tmp_path):
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_text("")
    runs = Runs(entry(tmp_path, path="*.log", pattern="Traceback|FATAL"))
    runs.run(T0)
    append(tmp_path / "a.log", "Traceback (most recent call last):\n  ERROR not this one\n")
    append(tmp_path / "b.log", "FATAL out of memory\nfine\n")
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (2, 4)
    assert result.details["files"] == [str(tmp_path / "a.log"), str(tmp_path / "b.log")]


def test_a_pattern_with_global_flags_counts_each_line_once_and_names_the_last(tmp_path):
    (tmp_path / "app.log").write_text("")
    runs = Runs(entry(tmp_path, path="app.log", pattern="(?i)fatal"))
    runs.run(T0)
    append(tmp_path / "app.log", "Fatal: disk, FATAL again on this line\nfine\nfatal: the last one\nok\n")
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (2, 4)
    assert result.details["last_error"] == "fatal: the last one"


@pytest.mark.parametrize("pattern, lines, errors", [
    ("^ERROR", "INFO a\n" + "ERROR b\n" * 5 + "INFO ERROR c\n", 5),
    ("boom$", "x boom\n" * 5 + "boom not last\n", 5),
    ("^FATAL$", "FATAL\nFATAL\n FATAL\n", 2),
])
def test_an_anchored_pattern_anchors_at_each_line(tmp_path, pattern, lines, errors):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path, pattern=pattern))
    runs.run(T0)
    append(log, lines)
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (errors, lines.count("\n"))


def test_a_json_record_quoting_an_upstreams_error_level_is_not_an_error(tmp_path):
    def quoting(at):
        return json.dumps({"level": "info", "time": datetime.fromtimestamp(at, UTC).isoformat(),
                           "msg": "retried", "upstream": {"level": "error", "status": 502}}) + "\n"

    log = tmp_path / "app.log"
    log.write_text(quoting(T0 - 20) + record("ERROR", T0 - 10))
    runs = Runs(entry(tmp_path))
    first = runs.run(T0)  # the first run reads by time (Tally.tail), later ones by block
    assert (first.details["errors"], first.details["records"]) == (1, 2)
    append(log, "".join(quoting(T0 + i) for i in range(50)) + record("ERROR", T0 + 60))
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"], result.status) == (1, 51, OK)
    assert '"levelname": "ERROR"' in result.details["last_error"]


def test_no_file_matching_is_unknown(tmp_path):
    result = Runs(entry(tmp_path, path="missing-*.log")).run(T0)
    assert result.status == UNKNOWN and "missing-*.log" in result.message


def test_a_bad_logfiles_entry_is_one_config_error_line_exit_3(tmp_path, run_monitor):
    proc = run_monitor(["health", "--no-notify"], tmp_path,
                       config='[[logfiles]]\nname = "app"\npath = "app.log"\n')
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["config error: logfiles[0]: no threshold: set one of errors_per_minute, error_ratio"], lines
    proc = run_monitor(["health", "--no-notify"], tmp_path, config='[[logfiles]]\nname = "app"\npath = "app.log"\n'
                       'pattern = "(a"\nerrors_per_minute = { warning = 1, critical = 10 }\n')
    assert proc.returncode == 3 and "logfiles[0].pattern: invalid regular expression" in proc.stderr


def test_health_reports_the_log_check_and_exports_its_rates(tmp_path, run_monitor, envelope):
    (tmp_path / "app.log").write_text(record("ERROR", datetime.now(UTC).timestamp()) * logfiles.MIN_RECORDS)
    config = ('[[logfiles]]\nname = "app"\npath = "app.log"\nerror_ratio = { warning = 0.5, critical = 0.9 }\n'
              f'[prometheus]\ntextfile_dir = "{tmp_path}"\n')
    proc = run_monitor(["health", "--no-notify", "--only", "logs"], tmp_path, config=config)
    check = envelope(proc)["checks"]["log:app"]
    assert check["status"] == CRITICAL and check["details"]["error_ratio"] == 1.0
    text = (tmp_path / "monitor_health.prom").read_text()
    assert 'monitor_log_error_ratio{log="app"} 1' in text and "monitor_log_errors_per_minute" in text


def test_the_window_of_a_run_is_the_time_since_the_previous_one(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 1))
    assert runs.run(T0 + timedelta(minutes=2).total_seconds()).details["window_seconds"] == 120


# --- issue 15's audit: what was missed, lost or paged for nothing ---------------------------

def written_at(path, at):
    """Give `path` the modification time `at` (the runs' clock is not the machine's)."""
    os.utime(path, (at, at))


def gzip_copy(source, target):
    """What logrotate's `compress` does: gzip keeps the file's modification time."""
    with open(source, "rb") as src, gzip.open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    info = os.stat(source)
    os.utime(target, (info.st_atime, info.st_mtime))


@pytest.mark.parametrize("line, level, at", PLAIN_FORMATS, ids=[f[0][:48].decode() for f in PLAIN_FORMATS])
def test_each_plain_log_format_counts_by_the_first_level_word_of_its_head(tmp_path, line, level, at):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, line + b"\n")
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (int(level is not None), 1)


def test_json_errors_after_a_plain_line_in_the_same_read_are_all_counted(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, "Traceback (most recent call last):\n" + "".join(record("ERROR", T0 + i) for i in range(20)))
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (20, 21)


def test_a_json_log_that_starts_with_a_plain_banner_counts_its_json_and_plain_errors(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("scraper v2 starting (stderr)\n")
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, "".join(record("ERROR" if i % 2 else "INFO", T0 + i, "an ERROR word") for i in range(40))
           + "ERROR:scraper:plain\n")
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (21, 41)


def test_logrotate_compress_without_delaycompress_finishes_the_old_end_from_its_gzip_copy(tmp_path):
    log, old = tmp_path / "app.log", tmp_path / "app.log.1"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 10) + record("ERROR", T0 + 20))
    # logrotate's order: rename, create, compress, unlink; then the application writes.
    os.rename(log, old)
    log.write_text("")
    gzip_copy(old, tmp_path / "app.log.1.gz")
    os.unlink(old)
    append(log, record("ERROR", T0 + 30))
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (3, 3)
    assert "rotated_unread" not in result.details and "unread" not in result.message
    append(log, record("ERROR", T0 + 310))
    assert runs.run(T0 + 600).details["errors"] == 1  # each record once


def test_a_run_between_compress_and_unlink_reads_the_renamed_file_and_nothing_twice(tmp_path):
    log, old = tmp_path / "app.log", tmp_path / "app.log.1"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 10) + record("ERROR", T0 + 20))
    os.rename(log, old)
    log.write_text(record("ERROR", T0 + 30))
    gzip_copy(old, tmp_path / "app.log.1.gz")
    assert runs.run(T0 + 300).details["errors"] == 3  # app.log.1 found by its inode
    os.unlink(old)
    result = runs.run(T0 + 600)
    assert (result.details["errors"], result.details["records"]) == (0, 0)
    assert "rotated_unread" not in result.details


def test_dateext_rotations_are_finished_renamed_or_compressed(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 10))
    os.rename(log, tmp_path / "app.log-20261125")  # dateext: found by its inode
    log.write_text(record("ERROR", T0 + 30))
    assert runs.run(T0 + 300).details["errors"] == 2
    append(log, record("ERROR", T0 + 310) * 2)
    dated = tmp_path / "app.log-20261126"
    os.rename(log, dated)  # dateext with compress: only the .gz is left
    log.write_text("")
    gzip_copy(dated, tmp_path / "app.log-20261126.gz")
    os.unlink(dated)
    result = runs.run(T0 + 600)
    assert result.details["errors"] == 2 and "rotated_unread" not in result.details


def test_a_rotated_file_found_nowhere_is_said_in_the_message_never_silently(tmp_path):
    log, elsewhere = tmp_path / "app.log", tmp_path / "old"
    elsewhere.mkdir()
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 10))
    os.rename(log, elsewhere / "app.log.1")  # logrotate's olddir
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(record("ERROR", T0 - 86400).encode()))  # another day's
    log.write_text(record("INFO", T0 + 30))
    result = runs.run(T0 + 300)
    assert result.details["rotated_unread"] is True and result.details["errors"] == 0
    assert f"{log}: rotated away and not found renamed nor compressed" in result.message
    assert "rotated_unread" not in runs.run(T0 + 600).details  # said once


def test_a_file_that_had_stopped_changing_may_go_without_a_word(tmp_path):
    """logrotate's `rotate N` removes the oldest file, which a glob such as app.log* followed."""
    (tmp_path / "app.log.3").write_text(record("INFO", T0 - 86400))
    written_at(tmp_path / "app.log.3", T0 - 86400)
    runs = Runs(entry(tmp_path, path="app.log*"))
    runs.run(T0)
    runs.run(T0 + 300)
    os.unlink(tmp_path / "app.log.3")
    result = runs.run(T0 + 600)
    assert "rotated_unread" not in result.details and result.status == OK


def test_a_path_briefly_missing_keeps_its_state_and_is_read_from_its_start_when_back(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 10) * 3)
    os.rename(log, tmp_path / "app.log.1")  # logrotate nocreate: the application makes app.log later
    result = runs.run(T0 + 300)
    assert (result.status, result.details["errors"]) == (OK, 3)  # the tail, and not unknown
    assert f"no file matches {log} now" in result.message
    log.write_text("ERROR:scraper:no time on this line\n")  # read from 0, whatever its records' times
    result = runs.run(T0 + 600)
    assert (result.details["errors"], result.details["records"]) == (1, 1)
    assert Runs(entry(tmp_path, path="never-*.log")).run(T0).status == UNKNOWN


def test_a_rotated_end_bigger_than_max_bytes_in_a_gzip_copy_is_finished_over_the_next_runs(tmp_path):
    log, old = tmp_path / "app.log", tmp_path / "app.log.1"
    log.write_text("")
    runs = Runs(entry(tmp_path, max_bytes="1MB"))
    runs.run(T0)
    append(log, "".join(record("ERROR" if i % 4 == 0 else "INFO", T0 + i, "y" * 200) for i in range(8_000)))
    os.rename(log, old)  # ~2 MB written before logrotate ran
    log.write_text(record("ERROR", T0 + 9_000))
    gzip_copy(old, tmp_path / "app.log.1.gz")
    os.unlink(old)
    seen = [runs.run(T0 + 300 * i) for i in range(1, 5)]
    assert "not read yet" in seen[0].message
    assert sum(r.details["errors"] for r in seen) == 2_000 + 1
    assert max(r.details["bytes_read"] for r in seen) <= 1_000_000


def compress_rotate(log):
    """logrotate's compress without delaycompress: rename, create, gzip, unlink."""
    old = log.parent / (log.name + ".1")
    os.rename(log, old)
    log.write_text("")
    gzip_copy(old, log.parent / (log.name + ".1.gz"))
    os.unlink(old)


def test_a_gzip_copy_of_a_log_read_to_its_end_is_not_decompressed(tmp_path, monkeypatch):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, "".join(record("ERROR", T0 + i) for i in range(100)))
    assert runs.run(T0 + 300).details["errors"] == 100
    compress_rotate(log)  # nothing written since the run: its gzip trailer's size is the offset
    monkeypatch.setattr(logfiles, "UNZIP_SKIP_LIMIT", 0)  # decompressing to the offset would be refused
    result = runs.run(T0 + 600)
    assert (result.details["errors"], result.status) == (0, OK)
    assert "rotated_unread" not in result.details and "unread" not in result.message, result.message


def test_decompressing_gzip_copies_to_where_they_were_read_is_bounded_per_run_and_said(tmp_path, monkeypatch):
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    for log in logs:
        log.write_text("".join(record("INFO", T0 - 100 + i % 50, "y" * 200) for i in range(1_500)))  # ~420 KB read
    runs = Runs(entry(tmp_path, path="*.log"))
    runs.run(T0)
    monkeypatch.setattr(logfiles, "UNZIP_SKIP_LIMIT", 600_000)  # one copy's way in a run, not two
    for log in logs:
        append(log, "".join(record("ERROR", T0 + 10 + i) for i in range(7)))
        compress_rotate(log)
    first = runs.run(T0 + 300)
    assert first.details["errors"] == 7 and first.status == WARNING
    assert "the rest of a gzip copy not read yet (max_bytes 47.7 MiB, 585.9 KiB decompressed to reach it), next run" \
        in first.message, first.message
    second = runs.run(T0 + 600)
    assert second.details["errors"] == 7 and "not read yet" not in second.message
    monkeypatch.setattr(logfiles, "UNZIP_SKIP_LIMIT", 100_000)  # an end further in than a run decompresses
    append(logs[0], "".join(record("INFO", T0 + 700, "y" * 200) for _ in range(1_000)) + record("ERROR", T0 + 800))
    assert runs.run(T0 + 900).details["errors"] == 1
    append(logs[0], record("ERROR", T0 + 950))
    compress_rotate(logs[0])
    deep = runs.run(T0 + 1200)
    assert deep.details["rotated_unread"] is True
    assert f"{logs[0]}: its end lies past 97.7 KiB into its gzip copy (more than a run decompresses), unread" \
        in deep.message, deep.message


def test_a_glob_matching_rotated_names_counts_each_record_once_and_never_reads_gzip(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0))
    (tmp_path / "app.log.2.gz").write_bytes(gzip.compress(record("ERROR", T0 - 86400).encode() * 50))
    runs = Runs(entry(tmp_path, path="app.log*"))
    runs.run(T0)
    append(log, "".join(record("ERROR", T0 + i) for i in range(50)))
    assert runs.run(T0 + 300).details["errors"] == 50
    append(log, record("ERROR", T0 + 310))
    os.rename(log, tmp_path / "app.log.1")  # still matched: goes on from its offset
    log.write_text("")
    result = runs.run(T0 + 600)
    assert (result.details["errors"], result.status) == (1, OK)  # not 52 errors, critical
    assert result.details["files"] == [str(log), str(tmp_path / "app.log.1")]


def test_a_file_first_matched_after_the_first_run_counts_only_records_since_that_run(tmp_path):
    (tmp_path / "a.log").write_text("")
    runs = Runs(entry(tmp_path, path="*.log"))
    runs.run(T0)
    year_old = "".join(record("ERROR", T0 - 365 * 86400 + i) for i in range(2_000))
    (tmp_path / "b.log").write_text(year_old + record("INFO", T0 + 100) + record("ERROR", T0 + 200))
    (tmp_path / "c.log").write_text(year_old)
    written_at(tmp_path / "c.log", T0 - 365 * 86400)  # not written since the first run: not read at all
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"], result.status) == (1, 2, OK)
    append(tmp_path / "b.log", record("ERROR", T0 + 400))
    append(tmp_path / "c.log", '{"levelname": "ERROR", "message": "no time, after the run that found c.log"}\n')
    assert runs.run(T0 + 600).details["errors"] == 2


def test_the_budget_stops_before_a_line_it_cannot_take_whole(tmp_path):
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_text("")
    runs = Runs(entry(tmp_path, path="*.log", max_bytes="1KB"))
    runs.run(T0)
    line = record("ERROR", T0 + 1, "z" * 150)  # 228 bytes: four fill a.log's share of 1 KB
    append(tmp_path / "a.log", line * 4)
    append(tmp_path / "b.log", line * 2)
    seen = [runs.run(T0 + 300 * i) for i in range(1, 5)]
    assert sum(r.details["errors"] for r in seen) == sum(r.details["records"] for r in seen) == 6
    assert saved_file(runs, tmp_path / "b.log")["offset"] == 2 * len(line)


def test_one_error_seconds_after_the_previous_run_is_a_rate_over_a_minute(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path, errors_per_minute={"warning": 2, "critical": 10}))
    runs.run(T0)
    append(log, record("ERROR", T0 + 2))
    result = runs.run(T0 + 5)
    assert (result.status, result.details["errors_per_minute"], result.details["window_seconds"]) == (OK, 1.0, 5.0)
    assert "1/min over at least 1m" in result.message


def test_the_error_ratio_is_judged_from_twenty_records_only(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("")
    runs = Runs(entry(tmp_path, errors_per_minute=None, error_ratio={"warning": 0.1, "critical": 0.5}))
    runs.run(T0)
    append(log, record("ERROR", T0 + 1))
    result = runs.run(T0 + 300)
    assert (result.status, result.details["error_ratio"], result.details["error_ratio_judged"]) == (OK, 1.0, False)
    assert result.value is None
    assert "error ratio not judged under 20 records" in result.message
    exported = {name: value for name, _, value in logfiles.samples(result.replace(id="log:app"))}
    assert exported == {"monitor_log_errors_per_minute": 0.2, "monitor_log_error_ratio": None}
    append(log, record("INFO", T0 + 301))
    quiet = runs.run(T0 + 600)  # no error in too few records: 0, exported, nothing to judge
    exported = {name: value for name, _, value in logfiles.samples(quiet.replace(id="log:app"))}
    assert (quiet.status, quiet.value, exported["monitor_log_error_ratio"]) == (OK, 0.0, 0.0)
    append(log, "".join(record("ERROR" if i < 10 else "INFO", T0 + 600 + i) for i in range(20)))
    assert runs.run(T0 + 900).status == CRITICAL


def test_copytruncate_then_growth_past_the_old_offset_is_read_from_the_start(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0) * 3)
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    with open(log, "r+b") as handle:
        handle.truncate(0)
    append(log, "".join(record("ERROR", T0 + 100 + i) for i in range(5)))  # longer than before
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (5, 5)


def test_copytruncate_finishes_the_old_end_from_the_copy(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, record("ERROR", T0 + 10) * 2)  # written after the run, before logrotate
    shutil.copyfile(log, tmp_path / "app.log.1")  # copytruncate: copy, then truncate in place
    with open(log, "r+b") as handle:
        handle.truncate(0)
    append(log, record("ERROR", T0 + 30))
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (3, 3)


def copytruncate(log, at):
    """logrotate's copytruncate with rotate 3: NAME.N moved up, NAME copied to NAME.1, truncated."""
    folder, name = log.parent, log.name
    for n in (3, 2, 1):
        if (folder / f"{name}.{n}").exists():
            os.rename(folder / f"{name}.{n}", folder / f"{name}.{n + 1}")
    shutil.copyfile(log, folder / f"{name}.1")
    written_at(folder / f"{name}.1", at)  # copied after the previous run
    with open(log, "r+b") as handle:
        handle.truncate(0)


def test_copytruncate_with_a_glob_matching_the_copy_counts_each_record_once_over_rotations(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("INFO", T0))
    runs = Runs(entry(tmp_path, path="app.log*"))
    runs.run(T0)
    counted = 0
    for day in range(3):
        start = T0 + 1000 * day
        append(log, "".join(record("ERROR", start + 10 + i) for i in range(30)))
        counted += runs.run(start + 300).details["errors"]
        append(log, "".join(record("ERROR", start + 310 + i) for i in range(2)))  # after the run, before logrotate
        copytruncate(log, start + 400)
        append(log, record("ERROR", start + 410))
        rotated = runs.run(start + 600)
        # The copy goes on from where app.log stopped: the 2 unread records and the new one, not 32 more.
        assert rotated.details["errors"] == 3, (day, rotated.message)
        counted += rotated.details["errors"]
    assert counted == 3 * 33


def refuse_opening(monkeypatch, *paths):
    """EACCES on opening `paths` (chmod 000 does not stop root, who runs CI)."""
    import errno

    real = logfiles._open

    def denied(path):
        if path in map(str, paths):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(logfiles, "_open", denied)


def test_a_log_that_cannot_be_opened_is_unknown_and_read_from_its_offset_once_it_opens(tmp_path, monkeypatch):
    log = tmp_path / "app.log"
    log.write_text("".join(record("ERROR", T0 - 100 + i) for i in range(200)))  # before the first run
    runs = Runs(entry(tmp_path))
    runs.run(T0)
    append(log, "".join(record("ERROR", T0 + 10 + i) for i in range(200)))
    assert runs.run(T0 + 300).details["errors"] == 200
    with monkeypatch.context() as patch:
        refuse_opening(patch, log)
        append(log, "".join(record("ERROR", T0 + 400 + i) for i in range(5)))
        for at in (T0 + 600, T0 + 86400 + 900):  # a day later still: its state is kept, no OK meanwhile
            denied = runs.run(at)
            assert denied.status == UNKNOWN, denied.message
            assert denied.message.startswith("none of the 1 file(s) matching could be opened, unknown")
            assert "Permission denied" in denied.message
    restored = runs.run(T0 + 86400 + 1200)
    assert restored.details["errors"] == 5  # what it gained meanwhile, not its 405 errors again


def test_one_unopened_file_of_a_glob_makes_an_ok_log_unknown_and_leaves_a_critical_one_critical(tmp_path, monkeypatch):
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_text("")
    runs = Runs(entry(tmp_path, path="*.log"))
    runs.run(T0)
    refuse_opening(monkeypatch, tmp_path / "b.log")
    append(tmp_path / "a.log", record("INFO", T0 + 10))
    quiet = runs.run(T0 + 300)
    assert quiet.status == UNKNOWN and quiet.message.startswith("1 of the 2 file(s) matching could not be opened")
    append(tmp_path / "a.log", "".join(record("ERROR", T0 + 310 + i) for i in range(100)))
    assert runs.run(T0 + 600).status == CRITICAL


def test_two_thousand_broken_links_in_a_glob_make_a_short_message_and_bounded_details(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "real.log").write_text(record("INFO", T0 - 10))
    for i in range(2_000):
        os.symlink(f"/nonexistent/{i}", logs / f"gone-{i:04d}-{'x' * 200}.log")
    result = Runs(entry(tmp_path, path=str(logs / "*.log"))).run(T0)
    assert result.status == OK and len(result.message) < 1_000, len(result.message)
    assert "and 1995 more" in result.message
    assert (result.details["files"], result.details["files_total"]) == ([str(logs / "real.log")], 1)
    assert (len(result.details["problems"]), result.details["problems_total"]) == (10, 2_000)
    assert len(json.dumps(result.details)) < 5_000


def test_a_glob_of_more_files_than_one_check_follows_reads_the_most_recent_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(logfiles, "MAX_FILES", 3)
    for i in range(5):
        (tmp_path / f"w{i}.log").write_text(record("ERROR", T0 - 10))
        written_at(tmp_path / f"w{i}.log", T0 - 100 + i)
    result = Runs(entry(tmp_path, path="w*.log")).run(T0)
    assert "following the 3 most recently written of 5 files matching" in result.message
    assert result.details["files"] == [str(tmp_path / f"w{i}.log") for i in (2, 3, 4)]
    assert result.details["errors"] == 3


def test_compressed_names_do_not_use_up_the_glob_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(logfiles, "GLOB_LIMIT", 5)
    for i in range(20):
        (tmp_path / f"app.log.{i + 2}.gz").write_bytes(gzip.compress(b"old\n"))
    log = tmp_path / "app.log"
    log.write_text(record("ERROR", T0 - 10))
    result = Runs(entry(tmp_path, path="app.log*")).run(T0)
    assert (result.details["files"], result.details["errors"]) == ([str(log)], 1)


def test_a_state_saved_before_files_were_keyed_by_inode_goes_on_from_its_offset(tmp_path):
    log = tmp_path / "app.log"
    log.write_text(record("ERROR", T0 - 30))
    size = log.stat().st_size
    runs = Runs(entry(tmp_path))
    runs.saved = {"log:app": {"time": T0, "files": {str(log): {"inode": log.stat().st_ino, "offset": size,
                                                                 "size": size}}}}
    append(log, record("ERROR", T0 + 10))
    result = runs.run(T0 + 300)
    assert (result.details["errors"], result.details["records"]) == (1, 1)
    assert set(saved_file(runs, log)) >= {"path", "offset", "head", "kind"} and "size" not in saved_file(runs, log)


# --- rules: each log's own thresholds, and none for a threshold it leaves out -----------------

PER_LOG = {"logfiles": [
    {"name": "ratio-only", "path": "a.log", "error_ratio": {"warning": 0.1, "critical": 0.3}},
    {"name": "scraper", "path": "b.log", "errors_per_minute": {"warning": 2, "critical": 20}},
    {"name": "both", "path": "c.log", "errors_per_minute": {"warning": 1, "critical": 10},
     "error_ratio": {"warning": 0.05, "critical": 0.2}},
]}


def _alert(name, severity, log, instance, value):
    what, shown = {"LogErrorRateHigh": ("errors per minute", f"{value} errors/min"),
                   "LogErrorRatioHigh": ("error ratio", f"{value} of its records")}[name]
    # The levels differ by log: the description says "its configured level".
    return f"""\
          - exp_labels: {{severity: {severity}, instance: "{instance}:9100", job: node, log: {log}}}
            exp_annotations:
              summary: 'Log {log}: {what} high ({severity})'
              description: Log {log} on {instance}:9100 logged {shown} since the previous health run \
({severity} from its configured level).
              runbook: ssh {instance} monitor health --only logs --format text
"""


def _per_log_test() -> str:
    """Every log logs 50 errors a minute (40 % of its records) on its own host: ratio-only
    leaves errors_per_minute out and scraper error_ratio, so no rule of it watches them."""
    hosts = {"ratio-only": "vps-1", "scraper": "vps-2", "both": "vps-3"}
    text = "rule_files:\n  - rules.yml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n"
    for log, host in hosts.items():
        for metric, value in (("monitor_log_errors_per_minute", 50), ("monitor_log_error_ratio", 0.4)):
            text += f"      - series: '{metric}{{instance=\"{host}:9100\",job=\"node\",log=\"{log}\"}}'\n"
            text += f"        values: '{value}x20'\n"
    text += "    alert_rule_test:\n"
    for alert, value, logs in (("LogErrorRateHigh", "50.00", ("scraper", "both")),
                               ("LogErrorRatioHigh", "40%", ("ratio-only", "both"))):
        text += f"      - eval_time: 12m\n        alertname: {alert}\n        exp_alerts:\n"
        text += "".join(_alert(alert, severity, log, hosts[log], value)
                        for log in logs for severity in ("warning", "critical"))
    return text


def test_rules_render_each_logs_thresholds_and_none_for_a_threshold_it_leaves_out(tmp_path):
    from monitor.fleet import rules as render_rules
    from tests.test_fleet import run, tool

    text = render_rules.rules_yaml(monitor_config.build(PER_LOG, None, str(tmp_path)))
    assert ('expr: monitor_log_errors_per_minute{log=~"scraper"} >= 2 or '
            'monitor_log_errors_per_minute{log!~"ratio-only|scraper"} >= 1\n') in text
    assert ('expr: monitor_log_error_ratio{log=~"ratio-only"} >= 0.3 or '
            'monitor_log_error_ratio{log!~"ratio-only|scraper"} >= 0.2\n') in text
    (tmp_path / "rules.yml").write_text(text)
    (tmp_path / "test.yml").write_text(_per_log_test())
    tested = run([tool("promtool"), "test", "rules", "test.yml"], cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
