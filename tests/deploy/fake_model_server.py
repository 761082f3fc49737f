"""A stand-in model server for the router tests: every request is answered with this
server's name and the X-Chat-Id it received.

    python -m tests.deploy.fake_model_server NAME PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects
    disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stall
    server_name_: str = "?"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {"server": self.server_name_, "chat": self.headers.get("x-chat-id")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    Handler.server_name_ = name
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
