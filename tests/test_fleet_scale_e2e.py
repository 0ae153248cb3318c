"""Many hosts: 200 simulated hosts push to a real Pushgateway, a real Prometheus scrapes it
with the rendered rules and sends to a real Alertmanager routed by alertmanager.example.yml.

Each host's metrics are built and pushed by monitor's own code (`fleet/metrics.py`:
`build_registry`, `push`), grouped by instance and command as a `monitor health` run
with `prometheus.pushgateway_url` pushes them. 50 hosts have a full disk, 50 stopped
running health 2000 s ago, 100 are fine. The rules are `prometheus_rules.yml` as
rendered for the defaults, with every `for:` shortened to 2s (the renderer takes the
config's thresholds, not test durations). Every wait polls for an event.

Printed (run with -s): the rules' evaluation time at 200 hosts (Prometheus
/api/v1/rules, evaluationTime summed over the groups) and the Pushgateway's resident
memory (VmRSS) holding them; the README's "Fleet" section quotes them.
"""

import json
import re
import shutil
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from monitor.fleet import metrics
from monitor.results import CRITICAL, OK, Result, with_identity
from tests.telegram_standin import TelegramStandIn
from tests.test_alertmanager_e2e import example_config, free_port, get, wait_for

ROOT = Path(__file__).resolve().parents[1]
HOSTS = 200
FULL_DISK = {f"host-{i:03d}" for i in range(0, HOSTS, 4)}            # 50
STOPPED = {f"host-{i:03d}" for i in range(1, HOSTS, 4)}              # 50
SHORT_FOR = "2s"


def tool(name: str) -> str:
    return shutil.which(name) or pytest.fail(f"{name} not found: `make test` installs it (Debian package "
                                             f"prometheus, prometheus-alertmanager or prometheus-pushgateway)")


def start(args: list, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def host_registry(name: str, now: float) -> metrics.Exposition:
    disk = 97.0 if name in FULL_DISK else 41.0
    result = with_identity(Result(CRITICAL if disk >= 95 else OK, f"disk / {disk}% used", value=disk, unit="%",
                                  warning=90, critical=95), "disk:/", "system", 1.0)
    finished = now - 2000 if name in STOPPED else now
    return metrics.build_registry("health", [result], finished, 0.4, {"outbox": 0})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet-scale")
    processes = []
    bot = TelegramStandIn()
    try:
        am_port, gw_port, prom_port = free_port(), free_port(), free_port()
        (base / "alertmanager.yml").write_text(example_config(bot.api_url).replace(
            "group_wait: 2s", "group_wait: 5s"))
        processes.append(start([tool("prometheus-alertmanager"), f"--config.file={base / 'alertmanager.yml'}",
                                f"--storage.path={base / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                                "--cluster.listen-address="], base / "alertmanager.log"))
        gateway = start([tool("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{gw_port}",
                         f"--persistence.file={base / 'pushgateway.data'}"], base / "pushgateway.log")
        processes.append(gateway)
        for port, log in ((am_port, "alertmanager.log"), (gw_port, "pushgateway.log")):
            wait_for(lambda p=port: get(f"http://127.0.0.1:{p}/-/ready"), f"port {port}", logs=[base / log])

        # Every host pushes before Prometheus first scrapes: the alerts of one kind start
        # together, as a fleet-wide problem does, and Alertmanager groups them at once.
        now = time.time()
        url = f"http://127.0.0.1:{gw_port}"
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: metrics.push(url, "health", name, host_registry(name, now)),
                          [f"host-{i:03d}" for i in range(HOSTS)]))

        rules = re.sub(r"(?m)^(\s+for: ).*$", rf"\g<1>{SHORT_FOR}", (ROOT / "prometheus_rules.yml").read_text())
        (base / "rules.yml").write_text(rules)
        (base / "prometheus.yml").write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {base / 'rules.yml'}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{gw_port}']
""")
        processes.append(start([tool("prometheus"), f"--config.file={base / 'prometheus.yml'}",
                                f"--storage.tsdb.path={base / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                               base / "prometheus.log"))
        yield {"bot": bot, "prometheus": f"http://127.0.0.1:{prom_port}", "alertmanager": f"http://127.0.0.1:{am_port}",
               "gateway": gateway, "logs": [base / n for n in ("prometheus.log", "alertmanager.log", "pushgateway.log")]}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        bot.stop()


def prom(fleet, path: str, **params) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return json.loads(get(f"{fleet['prometheus']}/api/v1/{path}{query}"))["data"]


def firing(fleet, alertname: str, severity: str) -> set:
    return {a["labels"]["instance"] for a in prom(fleet, "alerts")["alerts"]
            if a["labels"]["alertname"] == alertname and a["labels"]["severity"] == severity and a["state"] == "firing"}


def am_metric(fleet, name: str, labels: str = "") -> float:
    text = get(f"{fleet['alertmanager']}/metrics").decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and labels in line)


def test_200_hosts_on_a_pushgateway_fire_each_hosts_alerts_and_one_message_per_alert(fleet):
    logs = fleet["logs"]
    wait_for(lambda: firing(fleet, "HostDiskUsageHigh", "critical") == FULL_DISK
             and firing(fleet, "MonitorHealthNotRunning", "critical") == STOPPED,
             "every full disk and every stopped host to fire", logs=logs)
    # The warning twin fires as well, and Alertmanager mutes it (inhibit_rules).
    assert firing(fleet, "HostDiskUsageHigh", "warning") == FULL_DISK
    assert not firing(fleet, "MonitorHealthAbsent", "critical")

    bot = fleet["bot"]
    wait_for(lambda: len(bot.delivered) >= 2, "the two grouped messages", logs=logs)
    before = am_metric(fleet, "alertmanager_nflog_queries_total")
    wait_for(lambda: am_metric(fleet, "alertmanager_nflog_queries_total") >= before + 2
             and am_metric(fleet, "alertmanager_notifications_total", 'integration="telegram"') == len(bot.delivered),
             "Alertmanager to flush again", logs=logs)
    texts = [m.text for m in bot.delivered]
    assert len(texts) == 2, "\n=====\n".join(texts)
    disk = next(t for t in texts if "<b>HostDiskUsageHigh</b>" in t)
    stopped = next(t for t in texts if "<b>MonitorHealthNotRunning</b>" in t)
    assert disk.startswith("🚨 CRITICAL") and "· 50 firing, 0 resolved" in disk and "50 in all" in disk
    assert "· 50 firing, 0 resolved" in stopped
    assert len(re.findall(r"<b>host-\d{3}</b>", disk)) == 10  # the first 10, then how many
    assert {h for h in re.findall(r"<b>(host-\d{3})</b>", disk)} <= FULL_DISK

    # The figures the README's "Fleet" section quotes.
    groups = prom(fleet, "rules")["groups"]
    evaluation = sum(g["evaluationTime"] for g in groups)
    rules = sum(len(g["rules"]) for g in groups)
    status = Path(f"/proc/{fleet['gateway'].pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    print(f"\n{HOSTS} hosts: {rules} rules evaluated in {evaluation * 1000:.1f} ms "
          f"({len(groups)} groups); Pushgateway RSS {rss_kb / 1024:.1f} MiB")
    assert evaluation > 0 and rss_kb > 0
