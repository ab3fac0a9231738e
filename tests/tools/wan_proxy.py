#!/usr/bin/env python3
"""A long fat pipe in user space, for tests and benchmarks (this kernel has no netem).

Listens on a TCP port and forwards every connection to a target. Each direction of each
connection behaves like one direction of a link with round-trip time RTT that holds at most
W bytes in flight:

  - a byte read from one side is written to the other side RTT/2 after it was read (the
    one-way delay);
  - a byte counts as in flight from the moment it is read until RTT after that (until the
    acknowledgement of a real link would be back at its sender), or RTT/2 after it was
    written if the far side was slow to take it;
  - while W bytes are in flight, nothing more is read from the source: its TCP buffers fill
    and it stalls, as a sender does whose window is full.

So one connection moves at most W / RTT bytes per second (4 MiB at 50 ms: about 84 MB/s),
whatever the tools at either end do; several connections each get their own W. Nothing else
is emulated (no loss, no bandwidth limit, no reordering).

  wan_proxy.py --listen HOST:PORT --target HOST:PORT --rtt-ms MS [--window BYTES]

PORT 0 picks a free port. Once listening, prints one line "listening on HOST:PORT" to stdout.
Runs until killed (SIGTERM or SIGINT end it quietly). Two threads per direction of each
connection; the forwarding copies are made while the threads hold no interpreter lock, so
several hundred MB/s go through on one core.

bench/transfer.sh uses its C++ twin, wan_proxy.cc (same semantics and options, about half the
CPU per byte); this one stays as the reference both are tested against (wan_proxy_test.py).
"""

import argparse
import collections
import signal
import socket
import sys
import threading
import time

READ_MAX = 1 << 20  # largest single read: bounds the granularity of the window


class Direction:
    """One direction of one connection: src -> (delay, window) -> dst."""

    def __init__(self, src, dst, delay, window, on_done):
        self.src = src
        self.dst = dst
        self.half_rtt = delay
        self.window = window
        self.on_done = on_done
        self.lock = threading.Condition()
        self.queue = collections.deque()    # (release time, bytes or None for EOF)
        self.credits = collections.deque()  # (time the bytes stop counting, count)
        self.in_flight = 0
        self.failed = False

    def start(self):
        threading.Thread(target=self.read_loop, daemon=True).start()
        threading.Thread(target=self.write_loop, daemon=True).start()

    def _reclaim(self, now):
        while self.credits and self.credits[0][0] <= now:
            self.in_flight -= self.credits.popleft()[1]

    def read_loop(self):
        try:
            while True:
                with self.lock:
                    while True:
                        if self.failed:
                            return
                        now = time.monotonic()
                        self._reclaim(now)
                        room = self.window - self.in_flight
                        if room > 0:
                            break
                        wait = self.credits[0][0] - now if self.credits else None
                        self.lock.wait(wait)
                data = self.src.recv(min(room, READ_MAX))
                now = time.monotonic()
                with self.lock:
                    if not data:
                        self.queue.append((now + self.half_rtt, None))
                        self.lock.notify_all()
                        return
                    self.in_flight += len(data)
                    self.queue.append((now + self.half_rtt, data))
                    self.lock.notify_all()
        except OSError:
            self.fail()

    def write_loop(self):
        try:
            while True:
                with self.lock:
                    while not self.queue and not self.failed:
                        self.lock.wait()
                    if self.failed:
                        return
                    release, data = self.queue.popleft()
                delay = release - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if data is None:
                    try:
                        self.dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    self.on_done(self)
                    return
                self.dst.sendall(data)
                now = time.monotonic()
                with self.lock:
                    # Acknowledged a full RTT after the read (or half of one after a late write).
                    self.credits.append((max(release + self.half_rtt, now + self.half_rtt),
                                         len(data)))
                    self.lock.notify_all()
        except OSError:
            self.fail()

    def fail(self):
        with self.lock:
            if self.failed:
                return
            self.failed = True
            self.lock.notify_all()
        self.on_done(self, failed=True)


class Pipe:
    """Both directions of one accepted connection; closes both sockets when both are done."""

    def __init__(self, client, server, half_rtt, window):
        self.sockets = (client, server)
        self.lock = threading.Lock()
        self.pending = 2
        self.up = Direction(client, server, half_rtt, window, self.done)
        self.down = Direction(server, client, half_rtt, window, self.done)

    def start(self):
        self.up.start()
        self.down.start()

    def done(self, direction, failed=False):
        with self.lock:
            if failed:
                # A reset or error on either side ends the whole connection, as on a real link.
                for s in self.sockets:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                for d in (self.up, self.down):
                    if d is not direction:
                        with d.lock:
                            d.failed = True
                            d.lock.notify_all()
                self.pending = 0
            else:
                self.pending -= 1
            if self.pending == 0:
                for s in self.sockets:
                    s.close()
                self.pending = -1


def parse_address(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    scale = units.get(text[-1:].upper(), 1)
    number = text[:-1] if scale > 1 else text
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"expected a byte count such as 4M, got {text!r}")
    return int(number) * scale


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_address, required=True, help="HOST:PORT")
    parser.add_argument("--target", type=parse_address, required=True, help="HOST:PORT")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip time, ms")
    parser.add_argument("--window", type=parse_size, default=4 << 20,
                        help="bytes in flight per connection and direction (default 4M)")
    args = parser.parse_args()
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must not be negative")
    half_rtt = args.rtt_ms / 2000.0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.create_server(args.listen, reuse_port=False)
    host, port = listener.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        while True:
            client, _ = listener.accept()
            try:
                server = socket.create_connection(args.target)
            except OSError as e:
                print(f"wan_proxy: cannot reach {args.target[0]}:{args.target[1]}: {e}",
                      file=sys.stderr, flush=True)
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Pipe(client, server, half_rtt, args.window).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
