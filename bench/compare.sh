#!/usr/bin/env bash
# The benchmark of the README's Performance section, in one run on one corpus (generated here by
# the project's own generator; nothing large is committed):
#   1. journalctl -D C -o export > /dev/null                 (merely reading the journal)
#   2. the naive pipeline: journalctl -D C -o json --all | duckdb, one zstd Parquet file per host
#      and minute (DuckDB CLI from PyPI)
#   3. journal-parquet --directory C --from-head --once, then jp-flush
# with wall time, CPU time, peak RSS, entries/s and Parquet bytes per entry, the ratios 3/1 and
# 2/3; then the live benchmark (bench/live.py): a private journald written to as fast as it
# accepts for 60 s while the collector follows and jp-flush runs every minute, and 60 s idle.
# Usage: bench/compare.sh [ENTRIES [DURATION [HOSTS]]]   (default: 1000000 2h 3; run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
N=${1:-1000000}
DURATION=${2:-2h}
HOSTS=${3:-3}
cargo build --release --locked --quiet
BIN=$CARGO_TARGET_DIR/release

# The DuckDB CLI, pinned, in a virtualenv of the benchmark's own.
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/journal-parquet/bench-venv
if ! "$VENV/bin/duckdb" --version 2>/dev/null | grep -q '^v1\.5\.6 '; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check duckdb-cli==1.5.6
fi
DUCKDB=$VENV/bin/duckdb

WORK=$(mktemp -d /var/tmp/jp-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 tests/tools/gen_journal.py -n "$N" --duration "$DURATION" --hosts "$HOSTS" --seed 1 \
  --quiet --journal "$WORK/c"
: >"$WORK/config.toml"
OURS=(--state-dir "$WORK/state" --data-dir "$WORK/data" --config "$WORK/config.toml")

declare -A WALL CPU RSS
# measure KEY COMMAND...: wall s, CPU s (user + sys, children included), peak RSS MiB (largest
# process), with GNU time.
measure() {
  local key=$1
  shift
  # Each step pays for its own writes, not for the page cache the step before left dirty.
  sync
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" >/dev/null
  read -r wall user sys rss <"$WORK/time"
  WALL[$key]=$wall
  CPU[$key]=$(echo "$user + $sys" | bc)
  RSS[$key]=$((rss / 1024))
}
size_of() { du -sb "$1" | cut -f1; }

measure read journalctl -D "$WORK/c" -o export
# The naive pipeline: what a user writes first. DuckDB infers the columns from the JSON.
measure naive sh -c "journalctl -D '$WORK/c' -o json --all | '$DUCKDB' -c \"
  COPY (SELECT *, strftime(make_timestamp(CAST(__REALTIME_TIMESTAMP AS BIGINT)), '%Y%m%d-%H%M')
          AS minute
        FROM read_json('/dev/stdin', format = 'newline_delimited'))
  TO '$WORK/naive' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (_HOSTNAME, minute))\""
measure collect "$BIN/journal-parquet" "${OURS[@]}" --directory "$WORK/c" --from-head --once
measure flush "$BIN/jp-flush" "${OURS[@]}"

rows() { "$DUCKDB" -noheader -list -c "SELECT count(*) FROM read_parquet('$1/**/*.parquet')"; }
NAIVE_ROWS=$(rows "$WORK/naive")
OUR_ROWS=$(rows "$WORK/data")
python3 - "$N" "$(size_of "$WORK/c")" "$(size_of "$WORK/naive")" "$(size_of "$WORK/data")" \
  "$NAIVE_ROWS" "$OUR_ROWS" \
  "${WALL[read]} ${CPU[read]} ${RSS[read]}" "${WALL[naive]} ${CPU[naive]} ${RSS[naive]}" \
  "${WALL[collect]} ${CPU[collect]} ${RSS[collect]}" "${WALL[flush]} ${CPU[flush]} ${RSS[flush]}" <<'PY'
import sys
n, journal, naive_bytes, our_bytes, naive_rows, our_rows = map(int, sys.argv[1:7])
read, naive, collect, flush = ([float(x) for x in a.split()] for a in sys.argv[7:11])
ours = [collect[0] + flush[0], collect[1] + flush[1], max(collect[2], flush[2])]
print(f"corpus: {n:,} entries, journal files {journal / n:.0f} B/entry")
print(f"{'':58} {'wall':>8} {'CPU':>8} {'peak RSS':>9} {'entries/s':>10} {'Parquet':>11}")
def row(label, m, size=None):
    b = f"{size / n:6.1f} B/entry" if size is not None else ""
    print(f"{label:58} {m[0]:7.1f}s {m[1]:7.1f}s {m[2]:6.0f} MiB {n / m[0]:10,.0f} {b}")
row("1. journalctl -D C -o export > /dev/null", read)
row(f"2. journalctl -o json --all | duckdb ({naive_rows:,} rows)", naive, naive_bytes)
row("3a. journal-parquet --directory C --from-head --once", collect)
row("3b. jp-flush", flush)
row(f"3. journal-parquet, both ({our_rows:,} rows)", ours, our_bytes)
print(f"ratios: 3/1 = {ours[0] / read[0]:.2f} (target <= 1.5)   2/3 = {naive[0] / ours[0]:.2f} (target >= 4)")
PY
python3 bench/live.py "$BIN" "$WORK" 60 60
