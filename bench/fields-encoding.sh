#!/usr/bin/env bash
# Why `fields` is plain UTF-8 (Parquet schema 3): reads one archive twice with the six engines and
# Iceberg of tests/tools/readers.py, once as jp-flush writes it (fields: UTF-8 string) and once
# with fields rewritten under DuckDB's JSON type (the Parquet JSON annotation schema 2 had), and
# prints what each reader made of each.
#   bench/fields-encoding.sh DATA
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
data=$(realpath "${1:?usage: bench/fields-encoding.sh DATA}")
json=$(mktemp -d /var/tmp/jp-fields-json.XXXXXX)
trap 'rm -rf "$json"' EXIT
"$JP_TEST_PYTHON" - "$data" "$json" <<'PY'
import duckdb, glob, os, sys
data, out = sys.argv[1], sys.argv[2]
for path in glob.glob(f"{data}/*/*/*/*/*.parquet"):
    target = out + path[len(data):]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    duckdb.sql(f"COPY (SELECT * REPLACE (CAST(fields AS JSON) AS fields) FROM read_parquet('{path}')) TO '{target}' (FORMAT parquet)")
PY
for variant in "$data" "$json"; do
  [[ $variant == "$data" ]] && echo "== fields as UTF-8 (schema 3)" || echo "== fields with the JSON annotation"
  "$JP_TEST_PYTHON" tests/tools/readers.py "$variant" "GET /" "SYSLOG_FACILITY" 2>/dev/null |
    "$JP_TEST_PYTHON" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    ok = "rows %d, fields LIKE hits %d" % (r.get("rows", 0), r.get("fields_hits", 0))
    print("  %-11s %s" % (r["reader"], r.get("error", "").split(chr(10))[0][:110] or ok))'
done
