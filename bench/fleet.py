#!/usr/bin/env python3
"""The fleet benchmark: HOSTS hosts' journals sent by HOSTS systemd-journal-upload processes, over
loopback HTTP, to HOSTS systemd-journal-remote listeners that write one file per host into one
directory (what one journal-remote with --split-mode=host writes for HOSTS remote machines; over
loopback every sender has the same address, so one listener per host stands in for that), while
the collector follows that directory and jp-flush runs at every minute boundary.

The uploads go as fast as the chain takes them: the rate reached is journal-remote's, and the
question is whether the collector keeps up with it. Lag is measured as journal-parquet sees it:
every 0.1 s, the number of entries journal-remote has written (the n_entries of its files'
headers) and the number the collector has committed (the sum of the sequence numbers in its state
file's cursors: each journal-remote file numbers its entries from 1, one cursor per file); an
entry's lag is the time from the moment journal-remote had written it to the moment the collector
had committed it.

With RATE (entries/s in all), the uploads are held to that rate: a thread stops them (SIGSTOP)
whenever journal-remote has written more than RATE × elapsed, and lets them go on (SIGCONT) when
it has written less, every 20 ms. That finds the highest rate at which the collector's lag stays
under a bound, on a machine whose cores the chain itself shares.

Usage: fleet.py BIN_DIR WORK_DIR HOSTS [ENTRIES [RATE]]   (run as root; ENTRIES in all, default
400,000; RATE: as fast as the chain goes)
"""
import bisect
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

BIN, WORK, HOSTS = sys.argv[1], sys.argv[2], int(sys.argv[3])
ENTRIES = int(sys.argv[4]) if len(sys.argv) > 4 else 400_000
RATE = int(sys.argv[5]) if len(sys.argv) > 5 else None
HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def written(directory):
    """Entries journal-remote has written: n_entries (offset 152) of every journal file's header."""
    total = 0
    for name in os.listdir(directory):
        if name.endswith(".journal") or name.endswith(".journal~"):
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    header = f.read(160)
                total += struct.unpack_from("<Q", header, 152)[0]
            except (OSError, struct.error):
                pass
    return total


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def main():
    corpus = os.path.join(WORK, f"fleet-corpus-{HOSTS}")
    if not os.path.isdir(corpus):
        subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "tools", "gen_journal.py"),
                        "-n", str(ENTRIES), "--hosts", str(HOSTS), "--duration", "1h", "--quiet",
                        "--journal", corpus], check=True)
    # One directory per host (the generator rotates a busy host's file): what each host's
    # journal-upload reads.
    hosts = {}
    for f in sorted(os.listdir(corpus)):
        if f.endswith(".journal"):
            hosts.setdefault(f.split("@")[0].removesuffix(".journal"), []).append(f)
    files = []
    for host, names in hosts.items():
        d = os.path.join(WORK, f"fleet-upload-{HOSTS}", host)
        os.makedirs(d, exist_ok=True)
        for n in names:
            if not os.path.exists(os.path.join(d, n)):
                os.symlink(os.path.join(corpus, n), os.path.join(d, n))
        files.append(d)
    received = os.path.join(WORK, f"fleet-received-{HOSTS}")
    # A run starts from nothing: journal-upload's saved cursors would make it send nothing.
    subprocess.run(["rm", "-rf", received, os.path.join(WORK, "fleet-state"),
                    os.path.join(WORK, "fleet-data")] +
                   [os.path.join(WORK, f) for f in os.listdir(WORK) if f.startswith("fleet-upload-") and f.endswith(".state")])
    os.makedirs(received)
    config = os.path.join(WORK, "fleet.toml")
    open(config, "w").close()
    common = ["--state-dir", os.path.join(WORK, "fleet-state"), "--data-dir",
              os.path.join(WORK, "fleet-data"), "--config", config]
    procs = []
    try:
        remotes, ports = [], []
        for i in range(len(files)):
            port = free_port()
            remotes.append(subprocess.Popen(
                ["/lib/systemd/systemd-journal-remote", f"--listen-http=127.0.0.1:{port}",
                 f"--output={received}/remote-host{i}.journal", "--split-mode=none"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ports.append(port)
        procs += remotes
        time.sleep(1)

        notify_path = os.path.join(WORK, "fleet-notify.sock")
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        committed = [0]

        def listen():
            while True:
                try:
                    data = notify.recv(65536).decode(errors="replace")
                except OSError:
                    return
                for line in data.splitlines():
                    if line.startswith("STATUS="):
                        committed[0] = int(line[7:].split()[0])
        threading.Thread(target=listen, daemon=True).start()
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        env.pop("JOURNAL_STREAM", None)
        collector = subprocess.Popen([f"{BIN}/journal-parquet", *common, "--directory", received,
                                      "--from-head", "--log-level", "debug"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(WORK, "fleet-collector.log"), "w"))
        procs.append(collector)
        time.sleep(1)

        stop = threading.Event()

        def flush_every_minute():
            while not stop.wait(60 - time.time() % 60):
                subprocess.run([f"{BIN}/jp-flush", *common], stdin=subprocess.DEVNULL,
                               capture_output=True)
        threading.Thread(target=flush_every_minute, daemon=True).start()

        samples = []  # (time, written by journal-remote, committed by the collector)
        state_file = os.path.join(WORK, "fleet-state", "cursor")

        def committed_now():
            try:
                first = open(state_file).readline()
            except OSError:
                return 0
            return sum(int(i, 16) for i in re.findall(r"\bi=([0-9a-f]+)", first))

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic(), written(received), committed_now()))
                time.sleep(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        c0 = cpu_seconds(collector.pid)
        r0 = sum(cpu_seconds(r.pid) for r in remotes)
        started = time.monotonic()
        uploads = [subprocess.Popen(["/lib/systemd/systemd-journal-upload",
                                     f"--url=http://127.0.0.1:{port}", f"--directory={f}", "--follow=no",
                                     f"--save-state={WORK}/fleet-upload-{i}.state"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
                   for i, (f, port) in enumerate(zip(files, ports))]
        if RATE:
            import signal

            def throttle():
                stopped = False
                while any(u.poll() is None for u in uploads):
                    ahead = written(received) > RATE * (time.monotonic() - started)
                    if ahead != stopped:
                        for u in uploads:
                            if u.poll() is None:
                                u.send_signal(signal.SIGSTOP if ahead else signal.SIGCONT)
                        stopped = ahead
                    time.sleep(0.02)
            threading.Thread(target=throttle, daemon=True).start()
        for u in uploads:
            u.wait()
        sent_in = time.monotonic() - started
        total = written(received)
        deadline = time.monotonic() + 120
        while committed_now() < total and time.monotonic() < deadline:
            time.sleep(0.25)
        caught_up_in = time.monotonic() - started
        c1 = cpu_seconds(collector.pid)
        r1 = sum(cpu_seconds(r.pid) for r in remotes)
        with open(f"/proc/{collector.pid}/status") as f:
            peak = [int(l.split()[1]) / 1024 for l in f if l.startswith("VmHWM")][0]
        stop.set()
        sampler.join()

        # Lag of each sample's committed count: when had journal-remote written that many?
        times = [s[0] for s in samples]
        writes = [s[1] for s in samples]
        lags = []
        for t, _w, c in samples:
            if c == 0 or t - started > sent_in:
                continue
            i = bisect.bisect_left(writes, c)
            if i < len(times):
                lags.append(max(0.0, t - times[i]))
        rate = total / sent_in
        print(f"fleet of {HOSTS}: {total:,} entries through journal-upload and journal-remote in "
              f"{sent_in:.1f} s ({rate:,.0f} entries/s, "
              f"{'held to ' + format(RATE, ',') if RATE else 'the chain' + chr(39) + 's maximum here'}); the collector "
              f"had committed them all {caught_up_in - sent_in:.1f} s after the last upload ended")
        print(f"  collector lag behind journal-remote while sending: p50 {percentile(lags, 50):.2f} s, "
              f"p99 {percentile(lags, 99):.2f} s, max {max(lags or [float('nan')]):.2f} s "
              f"({len(lags)} samples)")
        print(f"  CPU: collector {c1 - c0:.1f} s, journal-remote ({len(remotes)}) {r1 - r0:.1f} s "
              f"(collector/journal-remote {(c1 - c0) / max(r1 - r0, 1e-9):.2f}); collector peak RSS "
              f"{peak:.0f} MiB")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    main()
