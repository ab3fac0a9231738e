#!/usr/bin/env python3
"""Behaviour check of the WAN emulator (no throughput assertions: those belong in bench/).

  wan_proxy_test.py [PROXY_COMMAND...]

checks the proxy started by PROXY_COMMAND (e.g. the path of the C++ wan_proxy; the default is
wan_proxy.py beside this file), to which the test appends its --listen, --target, --rtt-ms and
--window arguments. Through a proxy with RTT R and window W in front of an echo server:
  - a one-byte echo takes at least R (R/2 each way), and the byte comes back unchanged;
  - 4 W bytes pushed one way cannot arrive before 3 R (the window lets W out per R), and
    arrive intact and in order;
  - a half-close from the client reaches the server, and the server's close reaches the client;
  - a second connection gets through while the first one is open;
  - a target that refuses the connection: the client's connection is closed and the proxy says
    "cannot reach", and keeps serving;
  - SIGTERM ends the proxy quietly (exit status 0);
  - a bad --window or --rtt-ms is refused with exit status 2 and a line naming it.
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


def start_proxy(command, target_port, stderr=None):
    proxy = subprocess.Popen(
        command + ["--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{target_port}",
                   "--rtt-ms", str(RTT * 1000), "--window", str(WINDOW)],
        stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = proxy.stdout.readline()
    if not line.startswith("listening on 127.0.0.1:"):
        proxy.kill()
        raise AssertionError(f"unexpected first line from the proxy: {line!r}")
    return proxy, int(line.rsplit(":", 1)[1])


def stop_proxy(proxy):
    proxy.terminate()
    status = proxy.wait(10)
    assert status == 0, f"the proxy ended with status {status} on SIGTERM"


def check_unreachable_target(command):
    # A port nobody listens on: bound, never listening, so nothing else can take it meanwhile.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        proxy, proxy_port = start_proxy(command, unused.getsockname()[1], subprocess.PIPE)
        try:
            for _ in range(2):  # the proxy keeps serving after a failure
                with socket.create_connection(("127.0.0.1", proxy_port)) as s:
                    s.settimeout(10)
                    try:
                        assert s.recv(1) == b"", "data came from an unreachable target"
                    except ConnectionResetError:
                        pass
        finally:
            stop_proxy(proxy)
        errors = proxy.stderr.read()
    assert errors.count("cannot reach 127.0.0.1:") == 2, f"unexpected stderr: {errors!r}"
    print("unreachable target: client closed, 'cannot reach' said")


def check_bad_arguments(command):
    for flag, value in (("--window", "0"), ("--window", "4X"), ("--rtt-ms", "-1"),
                        ("--rtt-ms", "fast")):
        args = {"--listen": "127.0.0.1:0", "--target": "127.0.0.1:1", "--rtt-ms": "10",
                flag: value}
        result = subprocess.run(command + [a for kv in args.items() for a in kv],
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == 2 and flag in result.stderr and not result.stdout, (
            f"{flag} {value}: status {result.returncode}, stderr {result.stderr!r}")
    print("bad --window and --rtt-ms refused")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    command = sys.argv[1:] or [sys.executable, os.path.join(here, "wan_proxy.py")]
    port = echo_server()
    proxy, proxy_port = start_proxy(command, port)
    try:

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

            with socket.create_connection(("127.0.0.1", proxy_port)) as second:
                second.sendall(b"y")
                assert recv_exactly(second, 1) == b"y"
            print("a second connection gets through meanwhile")

            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            assert s.recv(1) == b"", "the server's close did not come through"
            print("half-close and close pass through")
    finally:
        stop_proxy(proxy)
    check_unreachable_target(command)
    check_bad_arguments(command)
    print("ok")


if __name__ == "__main__":
    main()
