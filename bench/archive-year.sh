#!/usr/bin/env bash
# An archive kept for a year: one host's day (the generator at 3 entries/s) as minute files,
# copied to DAYS days (hard links renamed by date: the rows keep the first day's timestamps, so an
# hour is asked of the first day), measured as minute files and again after `jp-flush --compact`:
# bytes, `count(*)`, a case-insensitive text search and one hour (`--since`/`--until`), each with
# wall time and peak RSS, by journal-parquet query and by plain DuckDB (PyPI's, 2 threads) over
# the same files. Then jp-flush's own cost: the compaction's time and peak RSS.
# Usage: bench/archive-year.sh [DAYS [ENTRIES_A_DAY]]   (default 365 and 259,200; as root; needs
# about 1 GB per 30 days of disk under /var/tmp for the compacted copy)
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS=${1:-365}
N=${2:-259200}
. bench/lib.sh
PY=$JP_TEST_PYTHON
corpus -n "$N" --duration 1d --hosts 1 --start 2025-01-01T00:00:00
backfill
"$BIN/jp-flush" "${OURS[@]}" --all 2>/dev/null
HOST=$(ls "$WORK/data" | grep -v journal.duckdb | head -1)
"$PY" - "$WORK/data/$HOST" "$DAYS" <<'EOF'
import datetime, os, sys
root, days = sys.argv[1], int(sys.argv[2])
first = datetime.date(2025, 1, 1)
src = os.path.join(root, "2025/01/01")
names = sorted(os.listdir(src))
for d in range(1, days):
    day = first + datetime.timedelta(days=d)
    out = os.path.join(root, day.strftime("%Y/%m/%d"))
    os.makedirs(out, exist_ok=True)
    for n in names:
        os.link(os.path.join(src, n), os.path.join(out, day.strftime("%Y%m%d") + n[8:]))
EOF
# Every file is opened: the default query_max_files (100,000) would refuse a year of minutes.
printf 'query_max_files = 10000000\ncompact_after = "1d"\n' >"$WORK/config.toml"
rm -f "$WORK/data/journal.duckdb"

measure() {
  local label=$1
  shift
  sync
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || echo "  (failed: $(tail -1 "$WORK/err"))"
  read -r wall rss < <(tail -1 "$WORK/time")
  printf '%-52s %8.2f s %6d MiB  %s\n' "$label" "$wall" $((rss / 1024)) "$(tail -1 "$WORK/out" | cut -c1-40)"
}
PLAIN=("$PY" -c "import duckdb, sys; c = duckdb.connect(); c.execute('SET threads = 2'); print(c.sql(sys.argv[1]).fetchall())")
GLOB="$WORK/data/*/*/*/*/*.parquet"
questions() {
  local kind=$1 files bytes
  files=$(find "$WORK/data" -name '*.parquet' | wc -l)
  bytes=$(find "$WORK/data" -name '*.parquet' -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
  echo "== $kind: $files files, $((bytes / 1048576)) MiB"
  measure "count(*): journal-parquet query" \
    "$BIN/journal-parquet" query "${OURS[@]}" --format csv "SELECT count(*) FROM journal"
  measure "count(*): plain DuckDB" "${PLAIN[@]}" "SELECT count(*) FROM read_parquet('$GLOB')"
  measure "message ILIKE '%error%': journal-parquet query" \
    "$BIN/journal-parquet" query "${OURS[@]}" --format csv \
    "SELECT count(*) FROM journal WHERE message ILIKE '%error%'"
  measure "message ILIKE '%error%': plain DuckDB" "${PLAIN[@]}" \
    "SELECT count(*) FROM read_parquet('$GLOB') WHERE message ILIKE '%error%'"
  measure "an hour (--since --until), entries: query" \
    "$BIN/journal-parquet" query "${OURS[@]}" --format csv \
    --since "2025-01-01 12:00:00" --until "2025-01-01 13:00:00" "SELECT entry FROM entries"
}
echo "one host, $N entries a day, $DAYS days"
questions "minute files"
measure "jp-flush --compact ($DAYS days)" "$BIN/jp-flush" "${OURS[@]}" --compact
questions "day files"
