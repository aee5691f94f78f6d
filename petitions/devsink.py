"""A stand-in for county and unit systems during `make run`: accepts webhook notices on
loopback and prints them, so a newcomer can watch notices arrive."""
from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        try:
            notice = json.loads(body)
            summary = f"{notice.get('kind')} {notice.get('case_number')} -> {notice.get('unit_id')}"
        except ValueError:
            summary = f"{len(body)} bytes"
        print(f"[webhook {self.path}] {summary}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8009
    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
