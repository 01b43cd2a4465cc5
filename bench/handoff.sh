#!/usr/bin/env bash
# Measures the hand-off (a seal): how long jp-flush waits for its sealed segments and how long the
# collector stalls for each seal, while the collector follows a private journald written to at
# RATE entries/s (default 20000) and jp-flush runs every 2 s.
# Usage: bench/handoff.sh [RATE] [FLUSHES]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
RATE=${1:-20000}
FLUSHES=${2:-30}
cargo build --release --locked --quiet
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/jp-handoff.XXXXXX)
NS=jpbench$$
/lib/systemd/systemd-journald "$NS" </dev/null >/dev/null 2>&1 &
JPID=$!
COLLECTOR=""
cleanup() {
  [[ -n $COLLECTOR ]] && kill "$COLLECTOR" 2>/dev/null && wait "$COLLECTOR" 2>/dev/null
  kill "$JPID" 2>/dev/null; wait "$JPID" 2>/dev/null || true
  rm -rf /var/log/journal/*."$NS" /run/log/journal/*."$NS" /run/systemd/journal."$NS"
  # KEEP=1 keeps the logs and the buffer.
  if [[ -n ${KEEP:-} ]]; then echo "logs in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
for _ in $(seq 200); do
  JDIR=$(ls -d /var/log/journal/*."$NS" /run/log/journal/*."$NS" 2>/dev/null | head -1 || true)
  [[ -n $JDIR && -S /run/systemd/journal.$NS/socket ]] && break
  sleep 0.1
done
: > "$WORK/config.toml"
"$BIN/journal-parquet" --state-dir "$WORK/state" --data-dir "$WORK/data" --config "$WORK/config.toml" \
  --directory "$JDIR" --log-level debug 2> "$WORK/collector.log" &
COLLECTOR=$!
sleep 1
DURATION=$((FLUSHES * 2 + 5))
python3 bench/journal_writer.py "/run/systemd/journal.$NS/socket" "$RATE" "$DURATION" &
WRITER=$!
sleep 2
for _ in $(seq "$FLUSHES"); do
  "$BIN/jp-flush" --state-dir "$WORK/state" --data-dir "$WORK/data" --config "$WORK/config.toml" \
    --log-level debug 2>> "$WORK/flush.log"
  sleep 2
done
wait "$WRITER"
python3 - "$WORK/flush.log" "$WORK/collector.log" <<'PY'
import re, sys
def stats(name, xs):
    xs = sorted(xs)
    if not xs:
        print(f"{name}: no samples"); return
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    print(f"{name}: n={len(xs)} p50={p(0.5):.1f} ms p99={p(0.99):.1f} ms max={xs[-1]:.1f} ms")
waits = [float(m) for m in re.findall(r"sealed in ([0-9.]+) ms", open(sys.argv[1]).read())]
answers = [float(m) for m in re.findall(r"jp-flush answered ([0-9.]+) ms after it asked", open(sys.argv[2]).read())]
stalls = [float(m) for m in re.findall(r"longest stall ([0-9.]+) ms", open(sys.argv[2]).read())]
stats("jp-flush wait for its sealed segments", waits)
stats("collector's answer to a seal request", answers)
print(f"collector's longest stall for a seal (reading waited): {max(stalls or [0]):.1f} ms")
PY
