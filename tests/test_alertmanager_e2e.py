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

When a change reaches the cluster is the test's to decide, not the runs': monitor posts
through a `Gate` in front of each replica, which holds the posts until the test opens it
(all three hosts' at once; a recovery just after the waiting replica decided), so a slow
run on a busy machine cannot land a post inside a replica's wait.
"""

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
# "at least once"). The gates let each change through just after the waiting replica
# decided: it reaches both replicas within milliseconds, long before the next flush.
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


def example_config(api_url: str, group_wait: str = "2s", group_interval: str = f"{GROUP_INTERVAL}s") -> str:
    """alertmanager.example.yml, with a test bot token, the stand-in as Bot API and short waits."""
    config = yaml.safe_load((ROOT / "alertmanager.example.yml").read_text())
    config["route"].update(group_wait=group_wait, group_interval=group_interval, repeat_interval="1h")
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


class Gate:
    """A loopback door in front of one replica: it holds each POST until `open()`, then passes
    it on unchanged and answers with what the replica answered. `held` counts what came."""

    def __init__(self, target: str):
        gate = self
        self.target, self.held, self.opened = target, 0, threading.Event()

        class Door(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gate.held += 1
                gate.opened.wait(DEADLINE)
                request = urllib.request.Request(gate.target + self.path, data=body, method="POST",
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as resp:
                        status, answer = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Door)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def open(self):
        self.opened.set()

    def close(self):
        self.opened = threading.Event()

    def stop(self):
        self.open()
        self.server.shutdown()
        self.server.server_close()


def host(base: Path, name: str, urls: list[str], verdict: str) -> Path:
    folder = base / name
    folder.mkdir(exist_ok=True)
    (folder / "monitor.toml").write_text(  # the timeout leaves room for a gate held until a flush
        f'host = "{name}"\n[alerts]\nflap_window = "0s"\n[alertmanager]\nurls = {json.dumps(urls)}\n'
        f'timeout = "{int(DEADLINE)}s"\n' + VERDICT_CONFIGS[verdict])
    return folder


def through_gates(gates: list, posts: int, runs, before=None):
    """Start `runs` (callables), wait until the gates hold `posts` posts, call `before`, open the
    gates; return the runs' results."""
    for gate in gates:
        gate.close()
    base = sum(gate.held for gate in gates)
    with ThreadPoolExecutor(len(runs)) as pool:  # together, as cron starts them
        futures = [pool.submit(run) for run in runs]
        wait_for(lambda: sum(gate.held for gate in gates) - base >= posts or any(f.done() for f in futures),
                 f"{posts} posts at the gates")
        if before:
            before()
        for gate in gates:
            gate.open()
        return [future.result() for future in futures]


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
    gates = [Gate(url) for url in urls]
    try:
        _three_hosts(bot, replicas, logs, urls, gates, tmp_path)
    finally:
        for gate in gates:
            gate.stop()


def _three_hosts(bot, replicas, logs, urls, gates, tmp_path):
    hosts = {name: host(tmp_path, name, [gate.url for gate in gates], "critical") for name in "abc"}
    quiet = {"silences": 0, "silences_pending": 0}

    # The three hosts' posts reach the cluster together: one group, one message.
    envelopes = through_gates(gates, 6, [lambda f=folder: run_health(f) for folder in hosts.values()])
    for envelope in envelopes:
        assert envelope["overall_status"] == "critical"
        assert envelope["notifications"]["alertmanager"] == {"firing": 1, "resolved": 0, "accepted": 2,
                                                             "urls": 2, "pending": 0, **quiet}
    first = wait_for(lambda: bot.delivered, "the grouped message", logs=logs)[0]
    before = [queries(r) for r in replicas]
    wait_for(lambda: settled(bot, replicas, before), "both replicas to decide", logs=logs)
    assert len(bot.delivered) == 1, "\n=====\n".join(m.text for m in bot.delivered)
    assert first.chat_id == CHAT and first.parse_mode == "HTML"
    assert "🚨 CRITICAL" in first.text and "MonitorSystemDisk" in first.text
    assert [name for name in "abc" if f"<b>{name}</b>: disk:/ critical" in first.text] == ["a", "b", "c"]
    sender = next(r for r in replicas if sent(r))
    waiter = next(r for r in replicas if r is not sender)

    # Host b recovers: one message shows its resolution, the two others still firing. Its
    # posts reach the cluster just after the waiting replica decided.
    hosts["b"] = host(tmp_path, "b", [gate.url for gate in gates], "ok")
    (envelope,) = through_gates(gates, 2, [lambda: run_health(hosts["b"])], before=lambda: after_a_decision(waiter))
    assert envelope["notifications"]["alertmanager"]["resolved"] == 1
    second = wait_for(lambda: bot.delivered[1:], "b's resolution", logs=logs)[0]
    before = [queries(r) for r in replicas]
    wait_for(lambda: settled(bot, replicas, before), "both replicas to decide", logs=logs)
    assert len(bot.delivered) == 2, "\n=====\n".join(m.text for m in bot.delivered)
    assert "✅ <b>b</b>" in second.text and "<b>a</b>: disk:/ critical" in second.text
    assert "✅ <b>a</b>" not in second.text and "✅ <b>c</b>" not in second.text

    # The replica that sent so far is killed; host c recovers: the other replica alone
    # tells it, once (no race left: straight to the replicas). monitor posts to both; one
    # refusing is a warning, not a loss.
    sent_before = sent(sender)
    sender.stop()
    hosts["c"] = host(tmp_path, "c", urls, "ok")
    summary = run_health(hosts["c"])["notifications"]["alertmanager"]
    assert summary == {"firing": 0, "resolved": 1, "accepted": 1, "urls": 2, "pending": 0, **quiet}
    third = wait_for(lambda: bot.delivered[2:], "c's resolution", logs=logs)[0]
    before = [queries(r) for r in replicas]
    wait_for(lambda: queries(waiter) >= before[replicas.index(waiter)] + 1
             and sent(waiter) + sent_before == len(bot.delivered), "the live replica to decide", logs=logs)
    assert len(bot.delivered) == 3, "\n=====\n".join(m.text for m in bot.delivered)
    assert "✅ <b>c</b>" in third.text and "<b>a</b>: disk:/ critical" in third.text
    logged = (hosts["c"] / "logs" / "health.log").read_text()
    assert re.search(r"alertmanager http://127\.0\.0\.1:\d+: connection refused", logged)


# --- monitor's silences and acks, relayed as Alertmanager silences --------------------------------

PERIOD = 0.5  # the command's period in these runs: endsAt is 1.5 s ahead, so runs must keep posting


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One Alertmanager (no cluster), routed by alertmanager.example.yml, flushing every second."""
    folder = tmp_path_factory.mktemp("alertmanager")
    bot = TelegramStandIn()
    config = folder / "alertmanager.yml"
    config.write_text(example_config(bot.api_url, group_wait="0s", group_interval="1s"))
    port = free_port()
    log = folder / "alertmanager.log"
    process = subprocess.Popen(
        [shutil.which("prometheus-alertmanager") or pytest.fail("prometheus-alertmanager not found: "
                                                                "`make test` installs it"),
         f"--config.file={config}", f"--storage.path={folder}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address=", "--log.level=debug"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is None and get(f"{url}/-/ready"), "the Alertmanager", logs=[log])
        yield bot, url, log
    finally:
        process.kill()
        process.wait(10)
        bot.stop()


def sink(tmp_path: Path, url: str, environment: str) -> dict:
    """A host's config posting to `url`; its own environment, so its alerts are a group of their own."""
    from monitor import config as monitor_config

    (tmp_path / "state").mkdir(exist_ok=True)
    return monitor_config.build({"environment": environment, "alertmanager": {"urls": [url], "timeout": "10s"},
                                 "paths": {"state": str(tmp_path / "state")}}, None, str(tmp_path))


def disk(status: str):
    from monitor.results import Result, with_identity

    value = 96.0 if status == "critical" else 40.0
    return [with_identity(Result(status, f"disk / {value:g}% used", value=value, unit="%", warning=90, critical=95),
                          "disk:/", "system", 1.0)]


def run(config: dict, status: str, silences=(), ack=None, started=None) -> dict:
    """One run's Alertmanager step, as notify() calls it after a `monitor health` judged the disk."""
    from monitor.alerts import alertmanager

    now = time.time()
    entry = {"command": "health", "kind": "system", "status": status, "count": 1 if status != "ok" else 0,
             "since": started or now}
    if ack:
        entry["ack"] = {"by": ack, "at": now, "status": status}
    return alertmanager.post(config, "health", disk(status), None, {"disk:/": entry}, list(silences), "vps-e2e", now,
                             PERIOD, environ={})


def flushes(log: Path, environment: str) -> list[float]:
    """When Alertmanager flushed the group of `environment` (its debug log's "flushing" lines)."""
    from datetime import datetime

    found = []
    for line in log.read_text(errors="replace").splitlines():
        if "msg=flushing" in line and f'environment=\\"{environment}\\"' in line:
            found.append(datetime.fromisoformat(line.split(" ", 1)[0][3:].replace("Z", "+00:00")).timestamp())
    return found


def am_alerts(url: str, environment: str) -> list:
    from urllib.parse import quote

    return json.loads(get(f"{url}/api/v2/alerts?filter={quote(f'environment={chr(34)}{environment}{chr(34)}')}"))


def am_silence(url: str, silence_id: str) -> dict:
    return json.loads(get(f"{url}/api/v2/silence/{silence_id}"))


def test_a_silence_in_monitor_keeps_the_alert_firing_and_silenced_in_alertmanager_no_false_resolved(
        single, tmp_path):
    """Left unposted while silenced, the alert ended at its endsAt: Alertmanager sent ✅ RESOLVED
    for a check still critical, then paged it anew when the silence ended."""
    bot, url, log = single
    config = sink(tmp_path, url, "e2e-silence")
    began = time.time()
    ours = lambda: [m for m in bot.delivered if "vps-e2e" in m.text and "MonitorSystemDisk" in m.text]  # noqa: E731
    # Runs every few hundred ms (endsAt 1.5 s ahead), until the page arrived.
    wait_for(lambda: run(config, "critical", started=began) and ours(), "the critical page", logs=[log])
    assert "🚨 CRITICAL" in ours()[0].text
    silence = {"id": "s-e2e", "pattern": "disk:*", "until": time.time() + 3600, "reason": "resizing",
               "created": time.time(), "author": "@alice"}
    last_unsilenced_end = time.time() + 3 * PERIOD
    assert run(config, "critical", [silence], started=began)["silences"] == 1
    # The runs go on, silenced: two flushes of the group after the last endsAt posted before the
    # silence (the first decides, the second begins once the first's notifications went out),
    # or a second message (a group that resolved is flushed no more).
    wait_for(lambda: run(config, "critical", [silence], started=began) is not None and (
        len(ours()) > 1 or len([t for t in flushes(log, "e2e-silence") if t > last_unsilenced_end + 0.1]) >= 2),
             "two flushes past the old endsAt", logs=[log])
    assert len(ours()) == 1, [m.text for m in ours()]  # no ✅ RESOLVED, no second page
    (alert,) = am_alerts(url, "e2e-silence")
    relayed = json.loads((tmp_path / "state" / "alertmanager.json").read_text())["silences"]["silence:s-e2e"]["id"]
    assert alert["status"] == {"state": "suppressed", "silencedBy": [relayed], "inhibitedBy": []}
    made = am_silence(url, relayed)
    assert (made["createdBy"], made["comment"], made["status"]["state"]) == \
        ("@alice", "resizing (monitor silence s-e2e)", "active")
    assert {(m["name"], m["value"], m["isRegex"]) for m in made["matchers"]} == {
        ("alertname", "Monitor.+", True), ("environment", "e2e-silence", False), ("instance", "vps-e2e", False),
        ("check", "(?s:disk:.*)", True)}
    # Unmuted: the next run expires it, and the alert is active again.
    summary = run(config, "critical", [], started=began)
    assert (summary["silences"], summary["silences_pending"]) == (0, 0)
    assert am_silence(url, relayed)["status"]["state"] == "expired"
    assert am_alerts(url, "e2e-silence")[0]["status"]["state"] == "active"


def test_an_ack_in_monitor_is_a_silence_of_that_alert_in_alertmanager_until_it_resolves(single, tmp_path):
    bot, url, log = single
    config = sink(tmp_path, url, "e2e-ack")
    assert run(config, "critical", ack="@bob")["silences"] == 1
    relayed = json.loads((tmp_path / "state" / "alertmanager.json").read_text())["silences"]["ack:disk:/"]["id"]
    made = am_silence(url, relayed)
    assert made["status"]["state"] == "active" and made["createdBy"] == "@bob"
    assert {(m["name"], m["value"], m["isRegex"]) for m in made["matchers"]} == {
        ("alertname", "MonitorSystemDisk", False), ("check", "disk:/", False), ("command", "health", False),
        ("environment", "e2e-ack", False), ("instance", "vps-e2e", False), ("severity", "critical", False)}
    (alert,) = am_alerts(url, "e2e-ack")
    assert alert["status"]["state"] == "suppressed" and alert["status"]["silencedBy"] == [relayed]
    renewed = run(config, "critical", ack="@bob")  # the next run: renewed in place, a later end
    after = am_silence(url, relayed)
    assert renewed["silences"] == 1 and after["status"]["state"] == "active" and after["endsAt"] > made["endsAt"]
    assert json.loads((tmp_path / "state" / "alertmanager.json").read_text())["silences"]["ack:disk:/"]["id"] == relayed
    assert run(config, "ok")["silences"] == 0  # resolved: the ack lapsed
    assert am_silence(url, relayed)["status"]["state"] == "expired"


def test_a_mute_of_everything_in_monitor_silences_monitors_alerts_not_another_tools_on_the_same_host(
        single, tmp_path):
    """`/mute *` was relayed as `check=~".*"`, which an alert without a check label matches too:
    node_exporter's NodeDown for the same instance was silenced with monitor's."""
    from monitor.alerts.alertmanager import iso

    bot, url, log = single
    config = sink(tmp_path, url, "e2e-foreign")
    everything = {"id": "s-all", "pattern": "*", "until": time.time() + 3600, "reason": "", "created": time.time()}
    assert run(config, "critical", [everything])["silences"] == 1
    foreign = {"labels": {"alertname": "NodeDown", "instance": "vps-e2e", "environment": "e2e-foreign",
                          "job": "node"}, "endsAt": iso(time.time() + 600)}
    urllib.request.urlopen(urllib.request.Request(f"{url}/api/v2/alerts", json.dumps([foreign]).encode(),
                                                  {"Content-Type": "application/json"}), timeout=10).close()
    states = {a["labels"]["alertname"]: a["status"]["state"] for a in am_alerts(url, "e2e-foreign")}
    assert states == {"MonitorSystemDisk": "suppressed", "NodeDown": "active"}
