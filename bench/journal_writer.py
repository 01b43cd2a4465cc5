#!/usr/bin/env python3
"""Writes entries to a journald native socket at a steady rate: RATE entries/s for SECONDS (RATE 0:
as fast as journald takes them).
Run it outside any systemd unit so that journald's per-unit rate limit does not apply."""
import socket
import sys
import time


def main(sock_path, rate, seconds, tag="jp-bench"):
    rate, seconds = int(rate), float(seconds)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if rate <= 0:
        # As fast as journald takes them: a blocking send waits while its socket queue is full.
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            for _ in range(1000):
                msg = f"MESSAGE={tag} entry {n} with some payload to look like a real log line\nSYSLOG_IDENTIFIER={tag}\nPRIORITY=6\n"
                s.sendto(msg.encode(), sock_path)
                n += 1
        elapsed = time.monotonic() - start
        print(f"writer: {n} entries in {elapsed:.1f} s ({n / elapsed:.0f}/s)", file=sys.stderr)
        return
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        for _ in range(per_tick):
            msg = f"MESSAGE={tag} entry {n} with some payload to look like a real log line\nSYSLOG_IDENTIFIER={tag}\nPRIORITY=6\n"
            while True:
                try:
                    s.sendto(msg.encode(), sock_path)
                    break
                except (BlockingIOError, InterruptedError):
                    time.sleep(0.0005)  # journald's queue is full: wait, never drop
                # Any other error (journald gone) ends the run with a traceback.
            n += 1
        target = start + (n / per_tick) * tick
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - start
    print(f"writer: {n} entries in {elapsed:.1f} s ({n / elapsed:.0f}/s)", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
