"""A stand-in scraper for benchmarks: a loopback HTTP server that answers every GET late.

Each GET gets `{"status": "ok"}` after `delay` seconds, so a run of many scraper
checks shows whether they wait in parallel (total ~ one delay) or in turn.

    python bench/slow_server.py --port 0 --delay 0.2    # first line on stdout: the port

or, from Python: `server, port = start(0.2)` ... `server.shutdown()`.
"""

import argparse
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b'{"status": "ok"}'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a pooled client reuses its connections

    def do_GET(self):
        time.sleep(self.server.delay)
        head = (f"{self.protocol_version} 200 OK\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n").encode("ascii")
        try:
            self.wfile.write(head + BODY)  # one write: no Nagle wait between head and body
        except OSError:  # the client gave up first
            self.close_connection = True

    def log_message(self, format, *args):  # one line per request would drown the benchmark
        pass


class SlowServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when many probes connect at once, and a
    # dropped SYN is retried only after a second.
    request_queue_size = 128

    def __init__(self, address, delay: float):
        self.delay = delay
        super().__init__(address, _Handler)

    def get_request(self):
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def handle_error(self, request, client_address):  # a reset client is not news
        pass


def start(delay: float = 0.2, port: int = 0, host: str = "127.0.0.1") -> tuple[SlowServer, int]:
    """Serve in a daemon thread; return the server (stop it with `shutdown()`) and its port."""
    server = SlowServer((host, port), delay)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     name="slow-server", daemon=True).start()
    return server, server.server_address[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed first)")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before each answer")
    args = parser.parse_args(argv)
    server = SlowServer((args.host, args.port), args.delay)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
