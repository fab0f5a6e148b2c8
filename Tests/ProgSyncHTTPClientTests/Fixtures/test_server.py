#!/usr/bin/env python3
"""HTTP/1.1 keep-alive test server on a Unix socket (stdlib only).

Usage: test_server.py SOCKET_PATH
Prints "ready" on stdout once listening. Routes:
  GET|PUT|PATCH|DELETE /echo   JSON {method, path, headers, body}
  POST /echo                   echoes the request body (same Content-Type)
  GET  /big?bytes=N            N bytes of b"x"
  GET  /slow?ms=N              sleeps N ms, then answers "slow"
  GET  /count                  number of distinct client connections so far
  GET  /status?code=N          empty response with status N
"""

import http.server
import json
import os
import signal
import socketserver
import sys
import threading
import time
import urllib.parse

connections = 0
connections_lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        global connections
        super().setup()
        with connections_lock:
            connections += 1

    def log_message(self, format, *args):  # quiet; client_address is "" on Unix sockets
        pass

    def address_string(self):
        return "unix"

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body=b"", content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        body = self._read_body()
        if url.path == "/echo":
            if self.command == "POST":
                self._send(200, body, self.headers.get("Content-Type") or "application/octet-stream",
                           extra=[("X-Echo-Length", str(len(body)))])
            else:
                payload = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                }
                self._send(200, json.dumps(payload).encode(), "application/json",
                           extra=[("X-Multi", "one"), ("X-Multi", "two")])
        elif url.path == "/big":
            count = int(query.get("bytes", ["0"])[0])
            self._send(200, b"x" * count, "application/octet-stream")
        elif url.path == "/slow":
            time.sleep(int(query.get("ms", ["0"])[0]) / 1000.0)
            self._send(200, b"slow")
        elif url.path == "/count":
            with connections_lock:
                value = connections
            self._send(200, str(value).encode())
        elif url.path == "/status":
            self._send(int(query.get("code", ["200"])[0]))
        else:
            self._send(404, b"not found")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _route


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def watchdog(path, parent, deadline):
    """Exit when the test process goes away or after a hard deadline."""
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        os.unlink(path)
    except OSError:
        pass
    os._exit(0)


def main():
    path = sys.argv[1]
    # The parent may spawn us with signals blocked (libdispatch threads block
    # them and the mask is inherited): make SIGTERM work.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if os.path.exists(path):
        os.unlink(path)
    server = Server(path, Handler)
    threading.Thread(target=watchdog, args=(path, os.getppid(), time.monotonic() + 300), daemon=True).start()
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    main()
