"""Crash consistency: `kill -9` at random points loses no alert and leaves state readable.

Fifty runs of `monitor health` are killed at random moments against a Telegram that
takes a while to answer, so some die before, some during and some after sending; every
fifth is killed the moment its request reached Telegram, so some always die mid-send,
however busy the machine.
Every run adds one more failing scraper (s00, s01, ...), so every run owes the
operator a new alert. After each kill the state must still parse (SPEC: Failure
behaviour, "temp file in the same folder, fsync, rename") and the next run must
start, and the Prometheus textfile is whole or absent; after a last run with
Telegram healthy, every one of the fifty alerts must
have reached the chat at least once: duplicates are allowed, losses are not (SPEC:
Alerts, "nothing is dropped").
"""

import json
import os
import random
import signal
import time

from tests.conftest import monitor_json
from tests.faults.conftest import assert_state_readable, delivered_checks

KILLS = 50
SEED = int(os.environ.get("MONITOR_FAULTS_SEED", "0")) or random.randrange(1 << 30)


def test_kill_9_at_random_points_leaves_readable_state_and_loses_no_alert(install, telegram):
    rng = random.Random(SEED)
    telegram.delay = 0.2                       # each accepted message takes a fifth of a second
    install.telegram_extra = 'timeout = "5s"'
    install.extra = f'[prometheus]\ntextfile_dir = "{install.textfiles}"\n'
    install.textfiles.mkdir()
    prom = install.textfiles / "monitor_health.prom"
    env = {"MONITOR_LOCK_WAIT": "0"}           # a lock left behind by a dead run would show as exit 3
    killed = mid_send = finished = 0
    for i in range(KILLS):
        install.scrapers.append(f"s{i:02d}")
        before = len(telegram.received)
        proc = install.popen("health", "--format", "json", "--quiet", env=env)
        if i % 5 == 2:
            # Every fifth run dies the moment Telegram has its request and holds the answer
            # (0.2 s): a kill mid-send however slowly a busy machine brings the run there.
            deadline = time.monotonic() + 30
            while len(telegram.received) == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            time.sleep(rng.uniform(0.05, 0.7))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
            # The stand-in saw a request from it and the run died before it could finish.
            mid_send += len(telegram.received) > before
        proc.communicate(timeout=60)
        if proc.returncode != -signal.SIGKILL:
            finished += 1
            assert proc.returncode == 2, f"run {i} (seed {SEED}) exited {proc.returncode}"
        assert_state_readable(install.state)
        for line in install.log_lines():
            json.loads(line)
        if prom.exists():  # node_exporter may read it at any moment: whole or absent
            text = prom.read_text()
            assert text.endswith("\n") and "monitor_run_duration_seconds{" in text and "monitor_outbox_messages" in text

    telegram.delay = 0
    final = install.health()
    assert final.code == 2, final
    assert "state_write_error" not in final.data and not list(install.state.glob("*.corrupt-*"))
    owed = [f"scraper:{name}" for name in install.scrapers]
    lost = sorted(set(owed) - delivered_checks(telegram, owed))
    print(f"\ncrash consistency (seed {SEED}): {KILLS} runs, {killed} killed ({mid_send} mid-send), "
          f"{finished} finished; {len(telegram.delivered)} messages delivered; alerts lost: {len(lost)}")
    assert killed >= KILLS // 2 and mid_send >= 1, "the random delays no longer hit the runs"
    assert lost == [], f"seed {SEED}: never delivered: {lost}"
    assert monitor_json(final.stdout)["notifications"]["outbox"] == 0
