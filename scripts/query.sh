#!/usr/bin/env bash
# `journal-parquet query` over the archive that scripts/run.sh writes (./state and ./data of this
# checkout), with the binary of the shared target directory (built first if it is not there).
# Arguments are the query's: the SQL, --live, --format, --since, --until, --host.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
binary="$CARGO_TARGET_DIR/release/journal-parquet"
if [[ ! -x $binary ]]; then
  scripts/setup.sh
  cargo build --release --locked --bin journal-parquet
fi
exec "$binary" query --state-dir state --data-dir data "$@"
