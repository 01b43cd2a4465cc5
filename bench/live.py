#!/usr/bin/env python3
"""The live half of bench/compare.sh: a private journald written to as fast as it accepts for
WRITE seconds while the collector follows it and jp-flush runs at every minute boundary (as
jp-flush.timer does), then IDLE seconds with nothing written. Prints table rows: the collector's
lag (p50, p99, max: every 0.25 s while writing, now minus the timestamp of the newest entry it has
committed, read from its state file; seals included), its CPU next to journald's for the same
entries, jp-flush's time for the fullest minute, the collector's longest stall at a seal, and the
idle cost (wake-ups per second, CPU).

Usage: live.py BIN_DIR WORK_DIR [WRITE_SECONDS [IDLE_SECONDS]]   (run as root, outside any unit)
       live.py BIN_DIR WORK_DIR --sustained MINUTES   (the sustained-load run: MINUTES of writing
                                                      with a flush every minute, 10 s idle)
"""
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

BIN, WORK = sys.argv[1], sys.argv[2]
if sys.argv[3:4] == ["--sustained"]:
    WRITE, IDLE = float(sys.argv[4]) * 60, 10.0
else:
    WRITE = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    IDLE = float(sys.argv[4]) if len(sys.argv) > 4 else 60
HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, all threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def context_switches(pid):
    """Voluntary + involuntary context switches of the main thread, the one that polls: each is a
    wake-up or a preemption. (The commit thread ends and starts again with every commit, so
    their counts cannot be summed over a window; idle, they sleep.)"""
    total = 0
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ns = f"jpbench{os.getpid()}"
    journald = subprocess.Popen(["/lib/systemd/systemd-journald", ns],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    socket_path = f"/run/systemd/journal.{ns}/socket"
    procs = []
    try:
        journal_dir = None
        for _ in range(200):
            dirs = glob.glob(f"/var/log/journal/*.{ns}") + glob.glob(f"/run/log/journal/*.{ns}")
            if dirs and os.path.exists(socket_path):
                journal_dir = dirs[0]
                break
            time.sleep(0.1)
        assert journal_dir, "the private journald did not start"
        config = os.path.join(WORK, "live.toml")
        open(config, "w").close()
        common = ["--state-dir", os.path.join(WORK, "live-state"),
                  "--data-dir", os.path.join(WORK, "live-data"), "--config", config]

        notify_path = os.path.join(WORK, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        lags, statuses = [], []
        writing = threading.Event()

        def listen():
            while True:
                try:
                    data = notify.recv(65536).decode(errors="replace")
                except OSError:
                    return
                for line in data.splitlines():
                    if line.startswith("STATUS="):
                        statuses.append(line)
        threading.Thread(target=listen, daemon=True).start()

        # The committed lag: the state file's first line is the committed position, one cursor
        # per stream, each with the entry's realtime (t=, hex µs).
        state_file = os.path.join(WORK, "live-state", "cursor")

        def sample_lag():
            while True:
                if writing.is_set():
                    try:
                        first = open(state_file).readline()
                        stamps = [int(t, 16) for t in re.findall(r"\bt=([0-9a-f]+)", first)]
                        if stamps:
                            lags.append(max(0.0, time.time() - max(stamps) / 1e6))
                    except OSError:
                        pass
                time.sleep(0.25)
        threading.Thread(target=sample_lag, daemon=True).start()

        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        env.pop("JOURNAL_STREAM", None)
        collector_log = open(os.path.join(WORK, "collector.log"), "w")
        collector = subprocess.Popen([f"{BIN}/journal-parquet", *common, "--directory", journal_dir,
                                      "--log-level", "debug"], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=collector_log)
        procs.append(collector)
        time.sleep(1)

        # jp-flush at every minute boundary, as jp-flush.timer does.
        flushes = []
        stop_flushing = threading.Event()

        def flush_every_minute():
            while not stop_flushing.is_set():
                now = time.time()
                if stop_flushing.wait(60 - now % 60):
                    return
                started = time.monotonic()
                rss_file = os.path.join(WORK, "flush.rss")
                out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file,
                                      f"{BIN}/jp-flush", *common, "--log-level", "debug"],
                                     stdin=subprocess.DEVNULL, capture_output=True, text=True)
                wall = time.monotonic() - started
                m = re.search(r"wrote (\d+) files .*?, (\d+) entries", out.stderr)
                rss = int(open(rss_file).read().split()[-1]) / 1024
                flushes.append((wall, int(m.group(2)) if m else 0, out.returncode, rss))
        flusher = threading.Thread(target=flush_every_minute, daemon=True)
        flusher.start()

        # As fast as journald takes them: the writer waits whenever its socket queue is full.
        c0, j0 = cpu_seconds(collector.pid), cpu_seconds(journald.pid)
        writing.set()
        writer = subprocess.run([sys.executable, os.path.join(HERE, "journal_writer.py"),
                                 socket_path, "0", str(WRITE)],
                                capture_output=True, text=True)
        m = re.search(r"(\d+) entries", writer.stdout + writer.stderr)
        written = int(m.group(1)) if m else 0
        # Until the collector has read everything written (its STATUS= says caught up).
        caught_up_at = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if statuses and "caught up" in statuses[-1]:
                caught_up_at = time.monotonic()
                break
            time.sleep(0.2)
        writing.clear()
        c1, j1 = cpu_seconds(collector.pid), cpu_seconds(journald.pid)

        time.sleep(2)
        s0, i0 = context_switches(collector.pid), cpu_seconds(collector.pid)
        time.sleep(IDLE)
        s1, i1 = context_switches(collector.pid), cpu_seconds(collector.pid)
        # Every run of jp-flush succeeded (a failed export would leave the buffer growing).
        failed = [f for f in flushes if f[2] != 0]
        # The fullest minute is written at the tick after next: wait for it.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and (not flushes or max(f[1] for f in flushes) < written * 0.5
                                                and len(flushes) < 4):
            time.sleep(1)
        stop_flushing.set()

        with open(f"/proc/{collector.pid}/status") as f:
            peak = [int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM")]
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=60)
        collector_log.close()
        longest = re.findall(r"longest stall ([0-9.]+) ms", open(os.path.join(WORK, "collector.log")).read())
        fullest = max(flushes, key=lambda f: f[1]) if flushes else (float("nan"), 0, -1, 0)

        rate = written / WRITE
        print(f"live: {written:,} entries written in {WRITE:.0f} s ({rate:,.0f}/s, as fast as journald took them)")
        print(f"  collector lag (committed, every 0.25 s while writing): p50 {percentile(lags, 50):.1f} s, "
              f"p99 {percentile(lags, 99):.1f} s, max {max(lags or [float('nan')]):.1f} s "
              f"({len(lags)} samples)")
        print(f"  CPU for these entries: collector {c1 - c0:.1f} s, journald {j1 - j0:.1f} s "
              f"(collector/journald {(c1 - c0) / max(j1 - j0, 1e-9):.2f})")
        print(f"  jp-flush, fullest minute: {fullest[1]:,} entries in {fullest[0]:.2f} s "
              f"(exit {fullest[2]}; {len(flushes)} runs; peak RSS {max(f[3] for f in flushes or [fullest]):.0f} MiB)")
        print(f"  collector's peak RSS: {peak[0] if peak else float('nan'):.0f} MiB")
        print(f"  jp-flush runs that failed while writing: {len(failed)} of {len(flushes)}")
        print(f"  collector's longest stall at a seal: "
              f"{float(longest[-1]) if longest else float('nan'):.0f} ms")
        print(f"  idle {IDLE:.0f} s: {(s1 - s0) / IDLE:.2f} wake-ups/s, CPU {i1 - i0:.2f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        journald.terminate()
        journald.wait()
        for d in glob.glob(f"/var/log/journal/*.{ns}") + glob.glob(f"/run/log/journal/*.{ns}"):
            subprocess.run(["rm", "-rf", d])
        subprocess.run(["rm", "-rf", f"/run/systemd/journal.{ns}"])


if __name__ == "__main__":
    main()
