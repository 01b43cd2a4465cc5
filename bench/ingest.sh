#!/usr/bin/env bash
# Ingest into the buffer on a generated corpus, next to merely reading the journal:
#   journalctl -D C -o export > /dev/null      versus      journal-parquet --directory C --from-head --once
# Prints wall time, CPU time, peak RSS and entries/s of each. Usage: bench/ingest.sh [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
N=${1:-1000000}
cargo build --release --locked --quiet
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/jp-ingest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 tests/tools/gen_journal.py -n "$N" --duration 2h --hosts 3 --seed 1 --quiet --journal "$WORK/c"
: > "$WORK/config.toml"
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
echo "buffer file: $(du -sb "$WORK/state/buffer.duckdb" | cut -f1) bytes"
