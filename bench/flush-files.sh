#!/usr/bin/env bash
# jp-flush at fleet breadth: many small minutes (default 40,000 entries over a day of 4 hosts:
# 5,784 minute files of about 7 entries), side by side with pyarrow writing the same minute
# files (one zstd file a minute, from the same rows), in one run.
# Usage: bench/flush-files.sh [ENTRIES [DURATION [HOSTS]]]   (run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40000}
DURATION=${2:-1d}
HOSTS=${3:-4}
. bench/lib.sh
corpus -n "$N" --duration "$DURATION" --hosts "$HOSTS"
backfill
sync
/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$BIN/jp-flush" "${OURS[@]}" --all 2>/dev/null
read -r wall user sys rss <"$WORK/time"
files=$(find "$WORK/data" -name '*.parquet' | wc -l)
echo "jp-flush: $files files in ${wall} s ($(echo "$files / $wall" | bc) files/s), CPU $(echo "$user + $sys" | bc) s, peak RSS $((rss / 1024)) MiB"
"$JP_TEST_PYTHON" - "$WORK/data" "$WORK/pyarrow" <<'PY'
import glob, os, sys, time
import pyarrow.parquet as pq
src, dst = sys.argv[1], sys.argv[2]
tables = [(f, pq.read_table(f)) for f in sorted(glob.glob(f"{src}/*/*/*/*/*.parquet"))]
os.makedirs(dst)
start = time.time()
for i, (f, t) in enumerate(tables):
    out = os.path.join(dst, f"{i}.parquet")
    pq.write_table(t, out, compression="zstd")
took = time.time() - start
print(f"pyarrow:  {len(tables)} files in {took:.2f} s ({len(tables) / took:.0f} files/s), the same rows, one file a minute (no fsync, no rename)")
PY
