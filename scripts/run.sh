#!/usr/bin/env bash
# Runs the collector in the foreground on this machine's journal, set-up included. State goes to
# ./state, Parquet files to ./data (override with --state-dir/--data-dir); completed minutes are
# written every 60 s (--flush-every), so no unit or timer is needed. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
exec cargo run --release --locked --bin journal-parquet -- --flush-every 60 "$@"
