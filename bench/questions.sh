#!/usr/bin/env bash
# What operators ask, answered by journalctl on the journal files and by journal-parquet query on
# the archive made from them, as minute files and then compacted into day files (`jp-flush
# --compact`), side by side in one run: a case-insensitive text
# search over the day, one hour as JSON, and one identifier's hour as JSON. Each answer goes to
# a file; the script prints wall time, peak RSS and the answer's line count for both.
# Usage: bench/questions.sh [ENTRIES [HOSTS]]   (default: 1,036,800 entries = a day of 4 hosts at
# 3 entries/s; run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1036800}
HOSTS=${2:-4}
. bench/lib.sh
corpus -n "$N" --duration 1d --hosts "$HOSTS" --start 2026-11-01T00:00:00
backfill
"$BIN/jp-flush" "${OURS[@]}" --all 2>/dev/null
# An identifier and a word the generator writes (the most common ones).
ID=$("$BIN/journal-parquet" query "${OURS[@]}" --format csv \
  "SELECT syslog_identifier FROM journal GROUP BY ALL ORDER BY count(*) DESC LIMIT 1" | tail -1)
WORD=error
SINCE="2026-11-01 12:00:00"
UNTIL="2026-11-01 13:00:00"

# measure LABEL COMMAND...: wall s, peak RSS MiB, lines of the answer.
measure() {
  local label=$1
  shift
  sync
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" ||
    echo "  (failed: $(grep -v 'Command exited' "$WORK/err" | tail -1))"
  read -r wall rss < <(tail -1 "$WORK/time")
  printf '%-66s %7.2f s %6d MiB %9d lines\n' "$label" "$wall" $((rss / 1024)) "$(wc -l <"$WORK/out")"
}
echo "$N entries, $HOSTS hosts, a day; identifier $ID, word $WORD, hour $SINCE"
measure "text search: journalctl -g (case-insensitive) -o cat" \
  journalctl -D "$WORK/c" --case-sensitive=false -g "$WORD" -o cat
ours() {
  local kind=$1
  measure "text search: query message ILIKE, csv ($kind)" \
    "$BIN/journal-parquet" query "${OURS[@]}" --format csv \
    "SELECT message FROM journal WHERE message ILIKE '%$WORD%'"
  measure "an hour as JSON: query --since --until, entries ($kind)" \
    "$BIN/journal-parquet" query "${OURS[@]}" --since "$SINCE" --until "$UNTIL" --format csv \
    "SELECT entry FROM entries"
  measure "one identifier's hour: query, entries ($kind)" \
    "$BIN/journal-parquet" query "${OURS[@]}" --since "$SINCE" --until "$UNTIL" --format csv \
    "SELECT entry FROM entries WHERE syslog_identifier = '$ID'"
}
measure "an hour as JSON: journalctl -o json --all" \
  journalctl -D "$WORK/c" --since "$SINCE" --until "$UNTIL" -o json --all
measure "one identifier's hour: journalctl -t -o json --all" \
  journalctl -D "$WORK/c" --since "$SINCE" --until "$UNTIL" -t "$ID" -o json --all
ours "minute files"
# The same questions once the day is compacted (compact_after): one day file per host.
printf 'compact_after = "1d"\n' >"$WORK/config.toml"
"$BIN/jp-flush" "${OURS[@]}" --compact 2>/dev/null
ours "day files"
