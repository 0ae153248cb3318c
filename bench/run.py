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


def timed(argv, cwd=None, env=None):
    """Run argv once; return (wall seconds, peak RSS in MB, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


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


BENCHMARKS = {"health": bench_health}


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
