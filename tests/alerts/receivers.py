"""Local receivers for alert tests: an HTTP webhook sink and a minimal SMTP sink, both on 127.0.0.1,
recording what they receive (test doubles for the customer's chat webhook and mail relay)."""
from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebhookSink:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.requests.append({"auth": self.headers.get("Authorization"), "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> WebhookSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """Speaks just enough SMTP (RFC 5321) for smtplib: EHLO/HELO, MAIL, RCPT, DATA, QUIT."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                def say(line: str) -> None:
                    self.wfile.write((line + "\r\n").encode())

                say("220 sink ready")
                mail: dict = {"rcpt": []}
                while line := self.rfile.readline().decode():
                    cmd = line.strip().upper()
                    if cmd.startswith(("EHLO", "HELO")):
                        say("250 sink")
                    elif cmd.startswith("MAIL FROM"):
                        mail["from"] = line.split(":", 1)[1].strip()
                        say("250 ok")
                    elif cmd.startswith("RCPT TO"):
                        mail["rcpt"].append(line.split(":", 1)[1].strip())
                        say("250 ok")
                    elif cmd == "DATA":
                        say("354 end with .")
                        data = []
                        while (row := self.rfile.readline().decode()) not in (".\r\n", ""):
                            data.append(row)
                        mail["data"] = "".join(data)
                        sink.messages.append(mail)
                        mail = {"rcpt": []}
                        say("250 queued")
                    elif cmd == "QUIT":
                        say("221 bye")
                        return
                    else:
                        say("250 ok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> SmtpSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
