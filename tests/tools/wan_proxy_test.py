#!/usr/bin/env python3
"""Behaviour check of wan_proxy.py (no throughput assertions: those belong in bench/).

Through a proxy with RTT R and window W in front of an echo server:
  - a one-byte echo takes at least R (R/2 each way), and the byte comes back unchanged;
  - 4 W bytes pushed one way cannot arrive before 3 R (the window lets W out per R), and
    arrive intact and in order;
  - a half-close from the client reaches the server, and the server's close reaches the client.
"""

import os
import socket
import subprocess
import sys
import threading
import time

RTT = 0.2
WINDOW = 64 << 10


def echo_server():
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn):
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    return
                conn.sendall(data)

    def accept_loop():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener.getsockname()[1]


def recv_exactly(sock, n):
    parts = []
    while n > 0:
        data = sock.recv(min(n, 1 << 20))
        if not data:
            raise AssertionError(f"connection closed with {n} bytes still expected")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    port = echo_server()
    proxy = subprocess.Popen(
        [sys.executable, os.path.join(here, "wan_proxy.py"), "--listen", "127.0.0.1:0",
         "--target", f"127.0.0.1:{port}", "--rtt-ms", str(RTT * 1000), "--window",
         str(WINDOW)], stdout=subprocess.PIPE, text=True)
    try:
        line = proxy.stdout.readline()
        if not line.startswith("listening on "):
            raise AssertionError(f"unexpected first line from the proxy: {line!r}")
        proxy_port = int(line.rsplit(":", 1)[1])

        with socket.create_connection(("127.0.0.1", proxy_port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = time.monotonic()
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"
            elapsed = time.monotonic() - start
            assert elapsed >= RTT, f"echo through the proxy took {elapsed:.3f} s < RTT {RTT} s"
            print(f"one-byte echo: {elapsed * 1000:.0f} ms (RTT {RTT * 1000:.0f} ms)")

            payload = os.urandom(4 * WINDOW)
            got = []
            reader = threading.Thread(
                target=lambda: got.append(recv_exactly(s, len(payload))), daemon=True)
            start = time.monotonic()
            reader.start()
            s.sendall(payload)
            reader.join(30)
            elapsed = time.monotonic() - start
            assert got and got[0] == payload, "the echoed bytes differ from those sent"
            assert elapsed >= 3 * RTT, (
                f"4 windows went through in {elapsed:.3f} s: the window is not enforced "
                f"(at least {3 * RTT:.1f} s expected)")
            print(f"4 windows of {WINDOW} bytes, echoed: {elapsed:.2f} s (>= {3 * RTT:.1f} s)")

            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            assert s.recv(1) == b"", "the server's close did not come through"
            print("half-close and close pass through")
    finally:
        proxy.terminate()
        proxy.wait(10)
    print("ok")


if __name__ == "__main__":
    main()
