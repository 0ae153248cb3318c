"""Secrets sweep: in every failure mode of this suite, no command lets a secret out.

A recognisable bot token, Vault token (issued by the dev server under a chosen id)
and API key are set in the environment; every
command (health with Vault, a scraper and a quota against loopback peers;
backup-check; daily-report; notify test; config check) runs with -vv where it takes
it (urllib3's debug lines carry the bot token in the URL) in each failure mode:
Telegram answering 401 or 500 or gone, Vault gone or sealed (a real `bao server
-dev`), the log on a full disk; one more health run reads the bot token from Vault
(primed once while Vault works, so Vault's outage uses the kept copy). Then stdout,
stderr and every file under logs/ (archives decompressed), state/ and the textfile
folder are grepped for each secret (SPEC: Alerts, "The bot token and the Vault token
never appear in stdout, stderr, logs, state files or tracebacks").
"""

import sqlite3
import threading
from datetime import date, timedelta

import hvac
import pytest

from monitor.alerts.bot_token import TOKEN_COPY
from tests import loopback
from tests.faults.conftest import API_KEY, BOT_TOKEN, VAULT_TOKEN, Install, SlowTelegram, full_disk, no_traceback
from tests.openbao import dev_server, unused_url
from tests.telegram_standin import server_error, unauthorized

MODES = ["telegram 401", "telegram 500", "telegram down", "vault down", "vault sealed", "logs on a full disk"]
COMMANDS = {
    "health": ["health", "--format", "json", "-vv"],
    "backup-check": ["backup-check", "--format", "json", "-vv"],
    "daily-report": ["daily-report", "--format", "json", "-vv"],
    "notify test": ["notify", "test"],
    "config check": ["config", "check", "--format", "json"],
    "health, bot token in Vault": ["health", "--format", "json", "-vv"],
}
VAULT_HELD = "health, bot token in Vault"  # primed once against a working Vault: keeps its 0600 copy
LOG_NAMES = {"health": "health", "backup-check": "backup", "daily-report": "report"}


def _issue_token(server) -> hvac.Client:
    """Give VAULT_TOKEN (30 days, so the token check is ok, allowed to read the bot token kept
    at secret/monitor) on `server`; return a root client."""
    root = hvac.Client(url=server.addr, token=server.root_token, timeout=5)
    root.secrets.kv.v2.create_or_update_secret(path="monitor", mount_point="secret",
                                               secret={"telegram_token": BOT_TOKEN})
    root.sys.create_or_update_policy("bot", 'path "secret/data/monitor" { capabilities = ["read"] }')
    root.auth.token.create(id=VAULT_TOKEN, ttl="720h", policies=["default", "bot"])
    return root


@pytest.fixture(scope="module")
def vault():
    with dev_server(root_token="sweep-root") as server:
        _issue_token(server)
        yield server


@pytest.fixture(scope="module")
def sealed_vault():
    with dev_server(root_token="sweep-root") as server:
        _issue_token(server).sys.seal()
        yield server


@pytest.fixture(scope="module")
def peers():
    """The scraper's health endpoint and a quota provider that echoes the API key back."""
    with loopback.serve() as server:
        server.route("/health", loopback.reply(200, json={"status": "ok"}))

        def quota(handler):
            echoed = handler.headers.get("X-Api-Key", "")
            handler.send_whole(200, {"X-RateLimit-Remaining": "1", "X-RateLimit-Limit": "100",
                                     "X-Echo": echoed, "Content-Type": "text/plain"},
                               f"your key is {echoed}".encode())
        server.route("/quota", quota)
        yield server


def _config(inst: Install, vault_url: str, peers, folder) -> None:
    backups = folder / "backups"
    backups.mkdir()
    (backups / "db-1.sql").write_bytes(b"x" * 4096)
    db = folder / "opportunities.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE opportunities (found_at TEXT, source TEXT, roi REAL)")
        yesterday = date.today() - timedelta(days=1)
        conn.executemany("INSERT INTO opportunities VALUES (?, ?, ?)",
                         [(f"{yesterday}T12:0{i}:00+00:00", "uniswap", 0.1 * i) for i in range(5)])
    inst.extra = (
        f'[vault]\nurl = "{vault_url}"\ntimeout = "2s"\n'
        f'[[scrapers]]\nname = "uniswap"\nurl = "{peers.url("/health")}"\ntimeout = "2s"\n'
        'latency_ms = { warning = 100000, critical = 100000 }\n'
        f'[[quotas]]\nname = "etherscan"\nurl = "{peers.url("/quota")}"\ntimeout = "2s"\n'
        'headers = { "X-Api-Key" = "env:ETHERSCAN_API_KEY" }\n'
        'remaining_header = "X-RateLimit-Remaining"\nlimit_header = "X-RateLimit-Limit"\n'
        # Etherscan-style: the key in the query string, from a ${NAME} placeholder.
        f'[[quotas]]\nname = "etherscan-query"\nurl = "{peers.url("/quota")}?module=getapilimit&apikey=${{ETHERSCAN_API_KEY}}"\n'
        'timeout = "2s"\nremaining_header = "X-RateLimit-Remaining"\nlimit_header = "X-RateLimit-Limit"\n'
        f'[[backups]]\nname = "db"\npath = "{backups}/*.sql"\nmin_size = "1KB"\nmin_free_percent = 0\n'
        f'[report]\ndatabase = "sqlite:///{db}"\nmin_opportunities = 50\n'
        f'[prometheus]\ntextfile_dir = "{inst.textfiles}"\n')
    inst.textfiles.mkdir()
    inst.env.update(VAULT_TOKEN=VAULT_TOKEN, ETHERSCAN_API_KEY=API_KEY)


@pytest.mark.parametrize("mode", MODES)
def test_no_secret_reaches_any_output_or_file_in_any_failure_mode(mode, tmp_path, vault, sealed_vault, peers):
    telegram = SlowTelegram()
    try:
        vault_url = {"vault down": unused_url(), "vault sealed": sealed_vault.addr}.get(mode, vault.addr)
        installs = {}
        for name in COMMANDS:
            folder = tmp_path / name.replace(" ", "-")
            folder.mkdir()
            inst = installs[name] = Install(folder, telegram)
            _config(inst, vault_url, peers, folder)
            if name == VAULT_HELD:
                inst.telegram_extra = 'token_vault = "secret/monitor#telegram_token"'
                inst.env.pop("TELEGRAM_BOT_TOKEN")
                inst.extra = inst.extra.replace(vault_url, vault.addr)
                assert inst.run(*COMMANDS[name]).code in (0, 1, 2)  # Vault up: the token is read and kept
                inst.extra = inst.extra.replace(vault.addr, vault_url)
            if mode == "logs on a full disk" and name in LOG_NAMES:
                inst.wrapper = full_disk(inst.logs, "0750")
        if mode == "telegram 401":
            telegram.always(unauthorized())
        elif mode == "telegram 500":
            telegram.always(server_error())
        elif mode == "telegram down":
            telegram.stop()

        threads = [threading.Thread(target=installs[name].run, args=COMMANDS[name]) for name in COMMANDS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        telegram.stop()

    runs = {name: inst.runs[-1] for name, inst in installs.items()}
    for name, run in runs.items():
        assert no_traceback(run), (name, run.stderr)
        assert run.code in (0, 1, 2), (name, run)
    # The secrets were in play: sent to Telegram, to Vault, to the quota provider.
    if mode.startswith("telegram") and mode != "telegram down" or mode in ("vault down", "vault sealed"):
        assert telegram.received and {r.token for r in telegram.received} == {BOT_TOKEN}
    assert any(headers.get("X-Api-Key") == API_KEY for path, headers in peers.received if path == "/quota")
    assert any(path.endswith(f"&apikey={API_KEY}") for path, _ in peers.received)
    health = runs["health"].data["checks"]
    assert health["quota:etherscan"]["status"] == health["quota:etherscan-query"]["status"] == "critical"
    if mode in ("vault down", "vault sealed"):  # the Vault alert went out with the kept copy
        assert runs[VAULT_HELD].data["notifications"]["sent"] >= 1, runs[VAULT_HELD]
    if mode == "vault down":
        assert health["vault"]["status"] == "critical" and "refused" in health["vault"]["message"]
    elif mode == "vault sealed":
        assert health["vault"]["status"] == "critical" and "sealed" in health["vault"]["message"]
    else:
        assert health["vault-token"]["status"] == "ok"
    if mode == "logs on a full disk":
        assert all("log_write_error" in runs[name].data for name in LOG_NAMES)

    # The one exemption: the copy of the bot token read from Vault (README: Alerts and Telegram).
    copy = installs[VAULT_HELD].state / TOKEN_COPY
    assert copy.stat().st_mode & 0o777 == 0o600
    exempt = {f"bot token in {copy}", f"bot token secret part in {copy}"}
    leaks = [leak for inst in installs.values() for leak in inst.leaks() if leak not in exempt]
    assert leaks == [], leaks
