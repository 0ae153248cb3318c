"""A few hosts on an Alertmanager cluster: monitor posts to every replica, the cluster sends
one Telegram message.

Two real Alertmanagers (Debian's prometheus-alertmanager) in one gossip cluster, routed
by `alertmanager.example.yml` itself (only the bot token, the Bot API address and the
waits changed for the test) to the loopback Bot API stand-in. Three hosts (three state
folders, `host = "a" | "b" | "c"`) run the installed `monitor health` with a full disk.

"Exactly one message" is proven without sleeping: each replica's notification pipeline
queries its notification log once per flush of the group (`alertmanager_nflog_queries_total`)
before it decides to send or not; once both replicas have flushed twice more after the
message arrived, both have decided, and what they sent has reached the stand-in
(`alertmanager_notifications_total` equals what the stand-in received).
"""

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import VERDICT_CONFIGS, clean_env, monitor_json, seed_cpu_baseline
from tests.telegram_standin import TelegramStandIn

ROOT = Path(__file__).resolve().parents[1]
MONITOR = str(Path(sys.executable).with_name("monitor"))
CHAT = "-1001234567890"
DEADLINE = 90.0  # generous: a busy 2-CPU CI machine; every wait polls for an event
# As in production, the group interval is much longer than a replica's wait (peer timeout
# x its position in the cluster): a replica decides on the alerts it saw when its flush
# began, so a change landing inside that wait is sent again by it (Alertmanager's HA is
# "at least once"). The test posts each change just after the waiting replica decided.
# A whole `monitor health` run must post between two flushes: room for a busy 2-CPU CI machine.
GROUP_INTERVAL, PEER_TIMEOUT = 12, "500ms"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def wait_for(condition, what: str, deadline: float = DEADLINE, logs=()):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    tails = "\n".join(Path(log).read_text()[-1500:] for log in logs)
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def example_config(api_url: str) -> str:
    """alertmanager.example.yml, with a test bot token, the stand-in as Bot API and short waits."""
    config = yaml.safe_load((ROOT / "alertmanager.example.yml").read_text())
    config["route"].update(group_wait="2s", group_interval=f"{GROUP_INTERVAL}s", repeat_interval="1h")
    for route in config["route"]["routes"]:
        route["repeat_interval"] = "1h"
    for receiver in config["receivers"]:
        for telegram in receiver["telegram_configs"]:
            telegram.pop("bot_token_file")  # Debian 12's 0.25 knows only the inline token
            telegram.update(bot_token="123456:test-token-for-the-stand-in", api_url=api_url)
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


class Replica:
    def __init__(self, folder: Path, config: Path, peer: str | None):
        self.web, self.cluster = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.web}"
        self.log = folder / f"alertmanager-{self.web}.log"
        args = [shutil.which("prometheus-alertmanager") or pytest.fail("prometheus-alertmanager not found: "
                                                                      "`make test` installs it"),
                f"--config.file={config}", f"--storage.path={folder / str(self.web)}",
                f"--web.listen-address=127.0.0.1:{self.web}",
                f"--cluster.listen-address=127.0.0.1:{self.cluster}",
                f"--cluster.advertise-address=127.0.0.1:{self.cluster}",
                "--cluster.gossip-interval=100ms", "--cluster.pushpull-interval=1s",
                f"--cluster.peer-timeout={PEER_TIMEOUT}", "--cluster.probe-interval=200ms", "--cluster.settle-timeout=2s",
                "--log.level=debug"]
        if peer:
            args.append(f"--cluster.peer={peer}")
        self.process = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)

    def status(self) -> dict:
        return json.loads(get(f"{self.url}/api/v2/status"))

    def metric(self, name: str, labels: str = "") -> float:
        text = get(f"{self.url}/metrics").decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (not labels or labels in line) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alertmanagers")
    bot = TelegramStandIn()
    config = folder / "alertmanager.yml"
    config.write_text(example_config(bot.api_url))
    first = Replica(folder, config, None)
    replicas = [first]
    try:
        # The second joins a listening first (a failed join is retried only after 10 s).
        wait_for(lambda: first.process.poll() is None and get(f"{first.url}/-/ready"), "the first replica",
                 logs=[first.log])
        replicas.append(Replica(folder, config, f"127.0.0.1:{first.cluster}"))
        for replica in replicas:
            wait_for(lambda r=replica: r.process.poll() is None and len(r.status()["cluster"]["peers"]) == 2
                     and r.status()["cluster"]["status"] == "ready",
                     f"replica {replica.url} in a cluster of two", logs=[r.log for r in replicas])
        yield bot, replicas
    finally:
        for replica in replicas:
            replica.stop()
        bot.stop()


def host(base: Path, name: str, urls: list[str], verdict: str) -> Path:
    folder = base / name
    folder.mkdir(exist_ok=True)
    (folder / "monitor.toml").write_text(
        f'host = "{name}"\n[alerts]\nflap_window = "0s"\n[alertmanager]\nurls = {json.dumps(urls)}\n'
        f'timeout = "10s"\n' + VERDICT_CONFIGS[verdict])
    return folder


def run_health(folder: Path) -> dict:
    seed_cpu_baseline(folder / "state")
    done = subprocess.run([MONITOR, "health", "--config", str(folder / "monitor.toml"), "--format", "json"],
                          cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode in (0, 2), done.stderr
    return monitor_json(done.stdout)


def queries(replica) -> float:
    return replica.metric("alertmanager_nflog_queries_total") if replica.process.poll() is None else 0.0


def sent(replica) -> float:
    return replica.metric("alertmanager_notifications_total", 'integration="telegram"')


def settled(bot, replicas, before: list[float]) -> bool:
    """Every live replica decided once more since `before`, and all they sent arrived."""
    live = [(r, q) for r, q in zip(replicas, before) if r.process.poll() is None]
    if any(queries(r) < q + 1 for r, q in live):
        return False
    return sum(sent(r) for r, _ in live) == len(bot.delivered)


def after_a_decision(replica) -> None:
    """Return just after `replica` decided on a flush: a change now lands before its next one."""
    now = queries(replica)
    wait_for(lambda: queries(replica) > now, f"a flush of {replica.url}", logs=[replica.log])


def test_three_hosts_critical_together_give_one_message_then_one_resolution_even_with_a_replica_killed(
        cluster, tmp_path):
    bot, replicas = cluster
    logs = [r.log for r in replicas]
    urls = [r.url for r in replicas]
    hosts = {name: host(tmp_path, name, urls, "critical") for name in "abc"}

    with ThreadPoolExecutor(3) as pool:  # together, as cron starts them
        envelopes = list(pool.map(run_health, hosts.values()))
    for envelope in envelopes:
        assert envelope["overall_status"] == "critical"
        assert envelope["notifications"]["alertmanager"] == {"firing": 1, "resolved": 0, "accepted": 2,
                                                             "urls": 2, "pending": 0}
    first = wait_for(lambda: bot.delivered, "the grouped message", logs=logs)[0]
    before = [queries(r) for r in replicas]
    wait_for(lambda: settled(bot, replicas, before), "both replicas to decide", logs=logs)
    assert len(bot.delivered) == 1, "\n=====\n".join(m.text for m in bot.delivered)
    assert first.chat_id == CHAT and first.parse_mode == "HTML"
    assert "🚨 CRITICAL" in first.text and "MonitorSystemDisk" in first.text
    assert [name for name in "abc" if f"<b>{name}</b>: disk:/ critical" in first.text] == ["a", "b", "c"]
    sender = next(r for r in replicas if sent(r))
    waiter = next(r for r in replicas if r is not sender)

    # Host b recovers: one message shows its resolution, the two others still firing.
    hosts["b"] = host(tmp_path, "b", urls, "ok")
    after_a_decision(waiter)
    assert run_health(hosts["b"])["notifications"]["alertmanager"]["resolved"] == 1
    second = wait_for(lambda: bot.delivered[1:], "b's resolution", logs=logs)[0]
    before = [queries(r) for r in replicas]
    wait_for(lambda: settled(bot, replicas, before), "both replicas to decide", logs=logs)
    assert len(bot.delivered) == 2, "\n=====\n".join(m.text for m in bot.delivered)
    assert "✅ <b>b</b>" in second.text and "<b>a</b>: disk:/ critical" in second.text
    assert "✅ <b>a</b>" not in second.text and "✅ <b>c</b>" not in second.text

    # The replica that sent so far is killed; host c recovers: the other replica alone
    # tells it, once. monitor posts to both; one refusing is a warning, not a loss.
    sent_before = sent(sender)
    sender.stop()
    hosts["c"] = host(tmp_path, "c", urls, "ok")
    after_a_decision(waiter)
    summary = run_health(hosts["c"])["notifications"]["alertmanager"]
    assert summary == {"firing": 0, "resolved": 1, "accepted": 1, "urls": 2, "pending": 0}
    third = wait_for(lambda: bot.delivered[2:], "c's resolution", logs=logs)[0]
    before = [queries(r) for r in replicas]
    wait_for(lambda: queries(waiter) >= before[replicas.index(waiter)] + 1
             and sent(waiter) + sent_before == len(bot.delivered), "the live replica to decide", logs=logs)
    assert len(bot.delivered) == 3, "\n=====\n".join(m.text for m in bot.delivered)
    assert "✅ <b>c</b>" in third.text and "<b>a</b>: disk:/ critical" in third.text
    logged = (hosts["c"] / "logs" / "health.log").read_text()
    assert re.search(r"alertmanager http://127\.0\.0\.1:\d+: connection refused", logged)
