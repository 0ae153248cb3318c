"""Benchmarks of `make bench`: paired ratios against baselines measured in the same run.

Each benchmark interleaves repetitions of the command and its baseline (so a noisy
neighbour slows both alike), reports medians, the ratio, the peak RSS of the
command (from wait4's rusage, per process), and whether the issue's target is met.
Run: .venv/bin/python bench/run.py [NAME ...]   (NAME: health, ...)
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
MONITOR = os.path.join(VENV_BIN, "monitor")
PYTHON = os.path.join(VENV_BIN, "python")


# Runs argv[2:] and writes "wall-seconds peak-RSS-KB exit-code" to argv[1]. A command
# forked straight from this process would report this process's own size as its peak
# (Linux keeps the forking parent's high-water mark across exec): the benchmarks grow
# this process (servers, data), so every command goes through this small launcher,
# which times from its fork to the command's end.
LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def timed(argv, cwd=None, env=None):
    """Run argv once; return (wall seconds, peak RSS in MB, exit code)."""
    # Not /dev/null: GNU grep notices it and stops at the first match, like -q.
    sink = tempfile.TemporaryFile()
    with tempfile.NamedTemporaryFile("r", suffix=".timed") as result:
        subprocess.run([sys.executable, "-c", LAUNCHER, result.name, *argv], cwd=cwd, env=env,
                       stdout=sink, stderr=subprocess.DEVNULL, check=False)
        wall, rss_kb, code = result.read().split()
    sink.close()
    return float(wall), int(rss_kb) / 1024, int(code)


def paired(command, baseline, reps=21, cwd=None, env=None, warmup=2):
    """Interleave command and baseline runs; return medians and the command's peak RSS."""
    for _ in range(warmup):
        timed(command, cwd, env)
        timed(baseline, cwd, env)
    cmd_t, base_t, rss, codes = [], [], [], set()
    for _ in range(reps):
        t, r, code = timed(command, cwd, env)
        cmd_t.append(t)
        rss.append(r)
        codes.add(code)
        base_t.append(timed(baseline, cwd, env)[0])
    return statistics.median(cmd_t), statistics.median(base_t), max(rss), codes


def report(name, cmd_s, base_s, rss_mb, target_ratio=None, target_rss=None, extra=""):
    ratio = cmd_s / base_s
    verdicts = []
    if target_ratio is not None:
        verdicts.append(("ratio", ratio <= target_ratio, f"<= {target_ratio}x"))
    if target_rss is not None:
        verdicts.append(("rss", rss_mb <= target_rss, f"<= {target_rss} MB"))
    ok = all(v[1] for v in verdicts)
    detail = ", ".join(f"{n} {t}: {'ok' if good else 'MISSED'}" for n, good, t in verdicts)
    print(f"{name:<34} {cmd_s * 1000:8.1f} ms vs {base_s * 1000:7.1f} ms  ratio {ratio:5.2f}x  "
          f"peak RSS {rss_mb:5.1f} MB  [{detail}] {'PASS' if ok else 'FAIL'} {extra}")
    return ok


def bench_health():
    """Cold `monitor health --format json` with no config vs `python -c pass` (issue 2)."""
    with tempfile.TemporaryDirectory() as tmp:
        timed([MONITOR, "health", "--format", "json"], cwd=tmp)  # counters saved: no first-run sample
        cmd, base, rss, codes = paired([MONITOR, "health", "--format", "json"], [PYTHON, "-c", "pass"], cwd=tmp)
        return report("health cold, no config", cmd, base, rss, target_ratio=6, target_rss=20,
                      extra=f"exit codes {sorted(codes)}")


def bench_heartbeat():
    """Cold health with a [heartbeat] URL on a local watcher vs the same config without (issue 11)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Watcher(BaseHTTPRequestHandler):  # healthchecks.io's answer: 200 "OK"
        def do_GET(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")

        do_POST = do_GET

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Watcher)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ping/0f9e8d7c-6b5a-4321-9876-abcdef012345"
    with tempfile.TemporaryDirectory() as tmp:
        _write(os.path.join(tmp, "plain.toml"), "[logs]\nretention_days = 30\n")
        _write(os.path.join(tmp, "beat.toml"), f'[logs]\nretention_days = 30\n[heartbeat]\nhealth = "{url}"\n')
        command = [MONITOR, "health", "--format", "json", "--config"]
        timed(command + ["plain.toml"], cwd=tmp)  # counters saved: no first-run sample
        cmd, base, rss, codes = paired(command + ["beat.toml"], command + ["plain.toml"], cwd=tmp)
    server.shutdown()
    return report("health with a heartbeat vs without", cmd, base, rss, target_ratio=1.15,
                  extra=f"exit codes {sorted(codes)}")


def _write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def bench_scrapers():
    """50 scrapers answering in 200 ms: monitor vs curl --parallel, and vs one after another (issue 3)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import slow_server

    server, port = slow_server.start(delay=0.2)
    urls = [f"http://127.0.0.1:{port}/s{i}" for i in range(50)]
    with tempfile.TemporaryDirectory() as tmp:
        _write(os.path.join(tmp, "monitor.toml"), "".join(
            f'[[scrapers]]\nname = "s{i}"\nurl = "{u}"\nexpect_json = {{ status = "ok" }}\n' for i, u in enumerate(urls)))
        command = [MONITOR, "health", "--only", "scraper", "--format", "json"]
        curl = ["curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", "50", *urls]
        cmd, base, rss, codes = paired(command, curl, reps=7, cwd=tmp)
        ok = report("50 scrapers vs curl --parallel", cmd, base, rss, target_ratio=2.5, target_rss=40,
                    extra=f"exit codes {sorted(codes)}")
        sequential = timed(["curl", "-s", *urls], cwd=tmp)[0]
        speedup = sequential / cmd
        print(f"{'50 scrapers vs sequential curl':<34} {cmd * 1000:8.1f} ms vs {sequential * 1000:7.1f} ms  "
              f"speed-up {speedup:5.1f}x  [>= 20x: {'ok' if speedup >= 20 else 'MISSED'}] "
              f"{'PASS' if speedup >= 20 else 'FAIL'}")
    server.shutdown()
    return ok and speedup >= 20


def bench_vault_hang():
    """A Vault that accepts TCP and never answers, timeout 2s: the run ends in <= 2.5 s (issue 3)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # never accept(): connections complete in the backlog, no answer ever
    port = listener.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        _write(os.path.join(tmp, "monitor.toml"), f'[vault]\nurl = "http://127.0.0.1:{port}"\ntimeout = "2s"\n')
        wall, rss, code = timed([MONITOR, "health", "--only", "vault", "--format", "json"], cwd=tmp)
    listener.close()
    ok = wall <= 2.5 and code == 2
    print(f"{'vault that never answers (2s)':<34} {wall * 1000:8.1f} ms  exit {code}  peak RSS {rss:5.1f} MB  "
          f"[<= 2500 ms and critical: {'ok' if ok else 'MISSED'}] {'PASS' if ok else 'FAIL'}")
    return ok


OUT = os.path.join(ROOT, "bench", "out")  # generated data, kept between runs (gitignored)


def _data_file(name, size_mb, make):
    """Create bench/out/NAME once (size_mb of data made by `make(path)`); return its path."""
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        make(path)
    return path


def _backup_run(tmp, path, verify):
    _write(os.path.join(tmp, "monitor.toml"),
           f'[[backups]]\nname = "b"\npath = "{path}"\nverify = "{verify}"\nmin_count = 1\nmax_age = "3650d"\n'
           f'min_free_percent = 0\n')
    state = os.path.join(tmp, "state", "backup-verify.json")
    if os.path.exists(state):
        os.unlink(state)  # cold: no cached verdict
    return [MONITOR, "backup-check", "--format", "json"]


def bench_backups():
    """gzip -t and sha256sum against backup-check's streaming verification; RSS; cache hit (issue 5)."""
    gz = _data_file("dump-200MB.sql.gz", 0, lambda p: subprocess.run(
        f"head -c 190M /dev/urandom | base64 | gzip -1 > {p}", shell=True, check=True))
    raw = _data_file("dump-500MB.bin", 0, lambda p: subprocess.run(
        f"head -c 500M /dev/urandom > {p} && sha256sum {p} | sed 's#  .*/#  #' > {p}.sha256", shell=True, check=True))
    big = _data_file("dump-2GB.bin", 0, lambda p: subprocess.run(
        f"head -c 2G /dev/zero > {p} && sha256sum {p} | sed 's#  .*/#  #' > {p}.sha256", shell=True, check=True))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, verify, baseline, target in (
                ("gzip verify 200 MB vs gzip -t", gz, "gzip", ["gzip", "-t", gz], 1.3),
                ("sha256 verify 500 MB vs sha256sum", raw, "sha256", ["sha256sum", raw], 1.2)):
            times, base_times, rss = [], [], []
            for _ in range(3):
                t, r, _code = timed(_backup_run(tmp, path, verify), cwd=tmp)
                times.append(t)
                rss.append(r)
                base_times.append(timed(baseline)[0])
            results.append(report(label, statistics.median(times), statistics.median(base_times), max(rss),
                                  target_ratio=target))
        t, r, _code = timed(_backup_run(tmp, big, "sha256"), cwd=tmp)
        ok = r <= 40
        print(f"{'verify a 2 GB file':<34} {t * 1000:8.1f} ms  peak RSS {r:5.1f} MB  [rss <= 40 MB: "
              f"{'ok' if ok else 'MISSED'}] {'PASS' if ok else 'FAIL'}")
        results.append(ok)
        # Cache hit: the same unchanged file again, against a cold `health` start.
        command = [MONITOR, "backup-check", "--format", "json"]
        cmd, base, rss_hit, _ = paired(command, [MONITOR, "health", "--format", "json"], reps=9, cwd=tmp)
        results.append(report("backup-check cached vs health", cmd, base, rss_hit, target_ratio=1.5))
    return all(results)


def bench_report():
    """Errors in a 1M-line JSON log vs grep -c; a report over 333k rows a day vs plain ranges (issues 6, 14)."""
    log = _data_file("app-1M-mixed.log", 0, _make_log)
    db = _data_file("opportunities-1M.db", 0, _make_db)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        _write(os.path.join(tmp, "monitor.toml"), f'[report]\nerror_logs = ["{log}"]\n')
        command = [MONITOR, "daily-report", "--date", "2026-11-25", "--no-notify", "--format", "json"]
        cmd, base, rss, codes = paired(command, ["grep", "-c", '"ERROR"', log], reps=5, cwd=tmp, warmup=1)
        results.append(report("errors in 1M log lines vs grep -c", cmd, base, rss, target_ratio=3, target_rss=30))
    with tempfile.TemporaryDirectory() as tmp:
        # The baseline: the same figures from a user query that is one plain indexed range
        # (exact here: every row is UTC text), against the report's own SQL.
        plain = "SELECT found_at AS time, source, roi FROM opportunities WHERE found_at >= :start AND found_at < :end"
        _write(os.path.join(tmp, "own.toml"), f'[report]\ndatabase = "sqlite://{db}"\nerror_logs = []\n')
        _write(os.path.join(tmp, "plain.toml"), f'[report]\ndatabase = "sqlite://{db}"\nerror_logs = []\n'
                                                f'query = "{plain}"\n')
        command = [MONITOR, "daily-report", "--date", "2026-11-25", "--no-notify", "--format", "json", "--config"]
        cmd, base, rss, codes = paired(command + ["own.toml"], command + ["plain.toml"], reps=9, cwd=tmp, warmup=1)
        ok = report("report over 333k rows/day vs plain", cmd, base, rss, target_ratio=1.1, target_rss=60)
        fast = cmd <= 0.4
        print(f"{'report over 333k rows/day':<34} {cmd * 1000:8.1f} ms  [<= 400 ms: {'ok' if fast else 'MISSED'}] "
              f"{'PASS' if fast else 'FAIL'}")
        results.append(ok and fast)
    return all(results)


def _make_log(path):
    import json
    import random

    rng = random.Random(1)
    with open(path, "w") as out:
        for i in range(1_000_000):
            draw = rng.random()
            level = "ERROR" if draw < 0.03 else "INFO"
            # Half as many INFO lines as errors mention an error: candidates for a word search only.
            note = "retried after a timeout error, " if 0.03 <= draw < 0.045 else ""
            second = i * 86400 // 1_000_000
            out.write(json.dumps({"asctime": f"2026-11-25T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}+00:00",
                                  "levelname": level, "name": "scraper",
                                  "message": f"{note}fetched block {i} from uniswap " + "x" * 100}) + "\n")


def _make_db(path):
    import random
    import sqlite3

    rng = random.Random(2)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE opportunities (id INTEGER PRIMARY KEY, found_at TEXT, source TEXT, roi REAL)")
    sources = ["uniswap", "sushiswap", "curve", "balancer", "pancake"]
    rows = ((f"2026-11-{24 + i * 3 // 1_000_000:02d}T{(i * 3 % 1_000_000) * 86400 // 1_000_000 // 3600:02d}:00:00+00:00",
             rng.choice(sources), rng.random() * 20) for i in range(1_000_000))
    conn.executemany("INSERT INTO opportunities (found_at, source, roi) VALUES (?, ?, ?)", rows)
    conn.execute("CREATE INDEX opportunities_found_at ON opportunities (found_at)")
    conn.commit()
    conn.close()


BENCHMARKS = {"health": bench_health, "heartbeat": bench_heartbeat, "scrapers": bench_scrapers,
              "vault-hang": bench_vault_hang, "backups": bench_backups, "report": bench_report}


def main(names):
    if not os.path.exists(MONITOR):
        sys.exit("bench: run `make bench` (it installs .venv) first")
    # Fresh bytecode: with PYTHONDONTWRITEBYTECODE set, an edited module would be
    # recompiled on every run and the benchmark would measure the compiler.
    subprocess.run([PYTHON, "-m", "compileall", "-q", os.path.join(ROOT, "monitor")], check=True)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}")
    results = [BENCHMARKS[n]() for n in (names or BENCHMARKS)]
    print(f"{sum(results)} of {len(results)} benchmarks met their targets")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
