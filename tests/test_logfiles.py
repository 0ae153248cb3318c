"""`[[logfiles]]`: the `log:<name>` checks read what was appended since the previous run."""

import json
import os
import tracemalloc
from datetime import datetime, timedelta, timezone

from monitor import config as monitor_config
from monitor.checks import logfiles
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING
from monitor.state import Carried

UTC = timezone.utc
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def entry(tmp_path, **keys):
    keys = {"name": "app", "path": "app.log", "errors_per_minute": {"warning": 1, "critical": 10}, **keys}
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
    assert (runs.run(T0 + 300).details["errors"], runs.saved["log:app"]["files"][str(log)]["offset"]) == \
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
    (tmp_path / "app.log").write_text(record("ERROR", datetime.now(UTC).timestamp()))
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
    assert runs.saved["log:app"]["files"][str(tmp_path / "b.log")]["offset"] == 2 * len(line)
