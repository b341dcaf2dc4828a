#!/usr/bin/env python3
"""Runs `tendril echo-server` and `tendril echo-client` against each other on loopback: lines
echoed upper-cased, a line larger than both sockets' buffers, bytes after a NUL, a client whose
standard input is closed or cannot be read, and the server's lines about each connection when
its output is a pipe. Every run is bounded: a hang fails the check."""
import os
import re
import select
import signal
import subprocess
import sys
import time


def expect(cond, what):
    if not cond:
        print("check_echo: " + what)
        sys.exit(1)


class Server:
    """An echo server on a free port, its output read line by line from a pipe."""

    def __init__(self):
        self.proc = subprocess.Popen([TENDRIL, "echo-server", "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pending = b""
        banner = self.line(10)
        m = re.match(r"^echo server on 127\.0\.0\.1:(\d+) ", banner)
        expect(m, f"server banner: {banner!r}")
        self.port = m.group(1)

    def line(self, seconds):
        """The next line of the server's output, or None after `seconds` without one."""
        deadline = time.monotonic() + seconds
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def client(port, data, seconds=30, **kw):
    try:
        return subprocess.run([TENDRIL, "echo-client", "--port", port], input=data,
                              capture_output=True, timeout=seconds, **kw)
    except subprocess.TimeoutExpired:
        expect(False, f"echo-client did not finish in {seconds} s")


def replies(run):
    """What the client printed after its banner line."""
    expect(run.returncode == 0, f"echo-client: exit status {run.returncode}: {run.stderr!r}")
    banner, _, rest = run.stdout.partition(b"\n")
    expect(banner.startswith(b"connected to 127.0.0.1:"), f"client banner: {banner!r}")
    return rest


def main():
    server = Server()
    try:
        run = client(server.port, b"hello\nworld\nq\nnot sent\n")
        expect(replies(run) == b"HELLO\nWORLD\n", f"two lines: {run.stdout!r}")

        # The server writes each connection's lines as they happen, also into a pipe: they
        # stayed in its stdio buffer until it exited (and a Ctrl-C lost them).
        for what in ("connected", "disconnected"):
            line = server.line(10)
            expect(line is not None and re.match(rf"^\[Greenlet-\d+\] 127\.0\.0\.1:\d+ {what}$", line),
                   f"server line for '{what}': {line!r}")

        # The client sent the whole line before reading any of its echo: beyond what the two
        # sockets buffer, both ends blocked in send for good.
        size = 8 << 20
        run = client(server.port, b"a" * size + b"\n")
        out = replies(run)
        expect(len(out) == size + 1 and out == b"A" * size + b"\n",
               f"long line: {len(out)} bytes back of {size + 1}")

        # The reply was printed with printf("%s"): cut at the first NUL.
        run = client(server.port, b"a\0b\x01c\nnext\n")
        expect(replies(run) == b"A\0B\x01C\nNEXT\n", f"binary line: {run.stdout!r}")

        # With standard input closed, the connection became descriptor 0 and the client
        # waited for its own input there. Now a closed input is an empty one.
        run = client(server.port, None, 10, stdin=None, preexec_fn=lambda: os.close(0))
        expect(replies(run) == b"", f"closed input: {run.stdout!r}")

        # A read error on the input (a directory: EISDIR) was taken for its end: exit 0, silent.
        folder = os.open("/", os.O_RDONLY)
        try:
            run = client(server.port, None, 10, stdin=folder)
        finally:
            os.close(folder)
        expect(run.returncode == 1 and b"Is a directory" in run.stderr,
               f"unreadable input: {run.returncode} {run.stderr!r}")
    finally:
        server.stop()
    print("check_echo: ok")


if __name__ == "__main__":
    TENDRIL = sys.argv[1]
    main()
