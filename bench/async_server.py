"""A loopback scraper stand-in on one asyncio loop: thousands of slow answers at once.

Every GET gets `{"status": "ok"}` after `delay` seconds (keep-alive, HTTP/1.1). One
event loop in its own process serves every connection, so with 2 000 probes the
server is not the bottleneck (a thread per connection would be). Run it in a child
process: `server = spawn(delay)` ... `server.port`, `server.stop()`; or
`python bench/async_server.py --delay 0.2` (first line on stdout: the port).
"""

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys

BODY = b'{"status": "ok"}'
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


class _Protocol(asyncio.Protocol):
    def __init__(self, delay: float):
        self.delay, self.buffer, self.transport = delay, b"", None

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.buffer += data
        loop = asyncio.get_running_loop()
        while b"\r\n\r\n" in self.buffer:  # one answer per request head (GETs have no body)
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            loop.call_later(self.delay, self._answer)

    def _answer(self):
        if not self.transport.is_closing():
            self.transport.write(ANSWER)


async def _serve(delay: float, sock: socket.socket):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(delay), sock=sock, backlog=4096)
    print(sock.getsockname()[1], flush=True)
    await server.serve_forever()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of connections
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)  # a short backlog drops SYNs, retried only after a second
    try:
        asyncio.run(_serve(args.delay, sock))
    except KeyboardInterrupt:
        pass
    return 0


class Spawned:
    """The server in a child process: `port`, and `stop()`."""

    def __init__(self, delay: float):
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--delay", str(delay)],
                                        stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.process.terminate()
        self.process.wait()
        self.process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def spawn(delay: float = 0.2) -> Spawned:
    return Spawned(delay)


if __name__ == "__main__":
    sys.exit(main())
