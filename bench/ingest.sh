#!/usr/bin/env bash
# Ingest into the buffer and export to Parquet on a generated corpus, next to merely reading the
# journal:  journalctl -D C -o export > /dev/null   versus   journal-parquet --directory C
# --from-head --once, then jp-flush. Prints wall time, CPU time, peak RSS and entries/s of each,
# and the bytes per entry of the journal files and of the Parquet tree.
# Usage: bench/ingest.sh [ENTRIES [DURATION [HOSTS]]]   (default: 1000000 2h 3)
#        CONFIG='duckdb_memory_limit = "64MB"' bench/ingest.sh   (config lines to try)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
N=${1:-1000000}
DURATION=${2:-2h}
HOSTS=${3:-3}
cargo build --release --locked --quiet
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/jp-ingest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 tests/tools/gen_journal.py -n "$N" --duration "$DURATION" --hosts "$HOSTS" --seed 1 --quiet --journal "$WORK/c"
printf '%s\n' "${CONFIG:-}" > "$WORK/config.toml"
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" > /dev/null
  read -r wall user sys rss < "$WORK/time"
  python3 -c "
wall, cpu, rss, n = $wall, $user + $sys, $rss, $N
print(f'{\"$label\":<44} wall {wall:7.1f} s  cpu {cpu:7.1f} s  peak RSS {rss/1024:6.0f} MiB  {n/wall:8.0f} entries/s')"
}
echo "corpus: $N entries, $(du -sb "$WORK/c" | cut -f1) bytes of journal files"
measure "journalctl -D C -o export > /dev/null" journalctl -D "$WORK/c" -o export
measure "journal-parquet --from-head --once" "$BIN/journal-parquet" --state-dir "$WORK/state" \
  --data-dir "$WORK/data" --config "$WORK/config.toml" --directory "$WORK/c" --from-head --once
echo "buffer: $(du -sb "$WORK/state/buffer" | cut -f1) bytes"
measure "jp-flush (every completed minute)" "$BIN/jp-flush" --state-dir "$WORK/state" \
  --data-dir "$WORK/data" --config "$WORK/config.toml"
python3 - "$WORK/c" "$WORK/data" "$N" <<'PY'
import os, sys
def size(d):
    return sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(d) for f in fs)
files = sum(len([f for f in fs if f.endswith(".parquet")]) for _, _, fs in os.walk(sys.argv[2]))
n = int(sys.argv[3])
print(f"journal files: {size(sys.argv[1]) / n:.0f} B/entry; Parquet tree: {size(sys.argv[2]) / n:.1f} B/entry in {files} files")
PY
