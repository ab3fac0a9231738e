#!/usr/bin/env python3
"""A hostile S3 endpoint for tests/cli/s3_hostile_scenarios.sh: it answers every request badly
on purpose, in one of these modes, and logs each request line to LOG.

  hostile_s3.py MODE PORT_FILE LOG [REDIRECT_PORT]

  redirect  307 to http://127.0.0.1:REDIRECT_PORT/... (and to file:// for HEADs of *.file)
  record    200 with an empty body (a host that must never be reached)
  liar      HEAD: an object of 4096 bytes, ETag "v"; GET: a 206 whose Content-Range is not the
            range asked for
  flood     HEAD as liar; GET: 500 with an endless chunked body
The port it listens on (loopback, chosen by the system) is written to PORT_FILE.
"""
import socket
import sys
import threading

MODE, PORT_FILE, LOG = sys.argv[1], sys.argv[2], sys.argv[3]
OTHER = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else 0
lock = threading.Lock()


def serve(conn):
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            data = conn.recv(65536)
            if not data:
                return
            request += data
        line = request.split(b"\r\n", 1)[0].decode("latin-1")
        with lock, open(LOG, "a") as log:
            log.write(line + "\n")
        method, target = line.split(" ")[:2]
        try:
            if MODE == "redirect":
                where = ("file:///etc/passwd" if target.endswith(".file")
                         else "http://127.0.0.1:%d%s" % (OTHER, target))
                conn.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: %s\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n" % where.encode())
            elif MODE == "record":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            elif MODE in ("liar", "flood") and method == "HEAD":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nETag: \"v\"\r\n"
                             b"Connection: close\r\n\r\n")
            elif MODE == "liar":
                body = b"x" * 16
                conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 7-22/4096\r\n"
                             b"Content-Length: 16\r\nETag: \"v\"\r\nConnection: close\r\n\r\n" + body)
            elif MODE == "flood":
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n"
                             b"Connection: close\r\n\r\n")
                chunk = b"10000\r\n" + b"<" * 0x10000 + b"\r\n"
                for _ in range(1 << 16):  # 4 GiB at most; the client hangs up long before
                    conn.sendall(chunk)
        except OSError:
            pass


def main():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(str(server.getsockname()[1]))
    import os
    os.rename(PORT_FILE + ".tmp", PORT_FILE)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
