"""A real HTTP server on 127.0.0.1 that answers as a model provider, from recorded responses.

Each request takes the next reply from a queue: a recorded JSON body with a status and
headers, a recorded server-sent event stream (optionally cut off mid-way), a cut connection,
or a hang that lasts until the server stops (the client's timeout fires first). Requests
are kept, so that tests can check what router sent.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).with_name("recordings")


@dataclass
class Reply:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False  # send the body as a chunked text/event-stream
    cut: bool = False  # close the connection before the body is complete
    hang: bool = False  # send nothing (a stream: nothing more) until the server stops


def recorded(name: str, status: int = 200, **headers: str) -> Reply:
    body = (RECORDINGS / name).read_bytes()
    stream = name.endswith(".sse")
    return Reply(body, status, {k.replace("_", "-"): v for k, v in headers.items()}, stream=stream)


def stalled_stream(name: str) -> Reply:
    """The first half of the recorded stream, then silence."""
    body = (RECORDINGS / name).read_bytes()
    return Reply(body[: len(body) // 2], stream=True, hang=True)


def cut_stream(name: str) -> Reply:
    """The recorded stream, cut off in the middle (no terminating chunk)."""
    body = (RECORDINGS / name).read_bytes()
    return Reply(body[: len(body) // 2], stream=True, cut=True)


class ProviderServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.released = threading.Event()
        self.clients: list[Any] = []  # model adapters to close when the test ends
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                server.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "json": json.loads(body),
                        "port": self.client_address[1],
                        "query": self.path.partition("?")[2],
                    }
                )
                reply = (
                    server.replies.popleft()
                    if server.replies
                    else Reply(b'{"error": "no reply queued"}', 500)
                )
                if reply.hang and not reply.stream:
                    server.released.wait()
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.stream:
                    self._stream(reply)
                else:
                    self.send_header("content-type", "application/json")
                    self.send_header(
                        "content-length", str(len(reply.body) + (100 if reply.cut else 0))
                    )
                    self.end_headers()
                    self.wfile.write(reply.body)
                    if reply.cut:
                        self.close_connection = True

            def _stream(self, reply: Reply) -> None:
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for line in reply.body.splitlines(keepends=True):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                if reply.hang:  # the stream falls silent until the server stops
                    server.released.wait()
                    self.close_connection = True
                    return
                if reply.cut:
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and hung up is what some tests do on purpose

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def __enter__(self) -> ProviderServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
