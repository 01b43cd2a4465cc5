#!/usr/bin/env bash
# The web console on a 30-day archive of HOSTS hosts (the generator, ENTRIES in all, ending now;
# days older than a week compacted, as the guide recommends): the time each request takes, as
# curl measures it on loopback (the server's time plus a loopback round trip): the health page
# (cold: it walks the archive; warm: the walk is reused for a minute), the 30-day and 24-hour
# activity charts (the summary only), a text search over the last 24 h (first page), and a
# page of the same search with a host; beside `journal-parquet query` answering the search.
# Usage: bench/web.sh [ENTRIES [HOSTS]]   (default 2,000,000 and 4; as root)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
HOSTS=${2:-4}
. bench/lib.sh
NOW=$(date +%s)
corpus -n "$N" --duration 30d --hosts "$HOSTS" --start "@$((NOW - 30 * 86400 - 600))"
backfill
TOKEN=0123456789abcdef0123456789abcdef
printf '%s\n' "$TOKEN" >"$WORK/web.token"
chmod 0640 "$WORK/web.token"
printf 'compact_after = "7d"\nweb_token_file = "%s"\n' "$WORK/web.token" >"$WORK/config.toml"
/usr/bin/time -f "jp-flush --all --compact: %e s, %M KiB" \
  "$BIN/jp-flush" "${OURS[@]}" --all --compact 2>&1 | tail -1
echo "files: $(find "$WORK/data" -name '*.parquet' | wc -l)"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/journal-parquet" web "${OURS[@]}" --listen "127.0.0.1:$PORT" 2>/dev/null &
WEB=$!
trap 'kill $WEB 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "127.0.0.1:$PORT/login" && break; sleep 0.1; done
SINCE=$(date -u -d "@$((NOW - 86400))" '+%F %T')
HOST=$(ls "$WORK/data" | grep -v journal.duckdb | head -1)

# ask LABEL PATH: the time of one request (3 runs, the best and the worst).
ask() {
  local label=$1 path=$2 times=()
  for _ in 1 2 3; do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
      "127.0.0.1:$PORT$path")")
  done
  printf '%-52s %s s, then %s s, %s s\n' "$label" "${times[0]}" "${times[1]}" "${times[2]}"
}
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
echo "$N entries, $HOSTS hosts, 30 days"
ask "health (first: walks the archive)" "/api/health"
ask "activity, 30 d by priority" "/api/activity?range=30d&by=priority"
ask "activity, 24 h by host" "/api/activity?range=24h&by=host"
ask "search 'error', last 24 h, first page" "/api/search?text=error&since=$(enc "$SINCE")"
ask "search 'error', last 24 h, one host" "/api/search?text=error&host=$HOST&since=$(enc "$SINCE")"
/usr/bin/time -f "%e s, %M KiB" -o "$WORK/time" "$BIN/journal-parquet" query "${OURS[@]}" \
  --since "$SINCE" --format csv \
  "SELECT timestamp, message FROM journal WHERE contains(lower(message), 'error') ORDER BY timestamp DESC LIMIT 100" >/dev/null
printf '%-52s %s\n' "the same search: journal-parquet query" "$(cat "$WORK/time")"
