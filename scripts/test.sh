#!/usr/bin/env bash
# The whole test suite, set-up included: system packages, a journald, formatting, clippy, the
# unit and integration tests, the packages (built first) and the end-to-end tests in a booted
# Debian 12 guest. Tests run as root (they start journald instances and mount tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
# What only the tests need (the readers from PyPI, Java, rclone, s3s-fs, the guests) is mostly
# downloads: it is fetched while DuckDB compiles (a cold run), and waited for before the tests.
# On exit it is waited for, never killed: it may be inside apt.
mkdir -p "$CARGO_TARGET_DIR"
setup_log="$CARGO_TARGET_DIR/setup-for-tests.log"
scripts/setup.sh --for-tests >"$setup_log" 2>&1 &
setup_pid=$!
trap 'wait "$setup_pid" 2>/dev/null || true' EXIT
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
scripts/package.sh
if ! wait "$setup_pid"; then
  cat "$setup_log" >&2
  echo "test: scripts/setup.sh --for-tests failed (above)" >&2
  exit 1
fi
cat "$setup_log" >&2
skipped="$CARGO_TARGET_DIR/skipped-tests.txt"
rm -f "$skipped"
status=0
cargo test --release --locked "$@" || status=$?
# A test that cannot run on this machine (no nspawn) records why instead of passing silently.
if [[ -s $skipped ]]; then
  echo "SKIPPED (could not run on this machine):" >&2
  sed 's/^/  /' "$skipped" >&2
fi
exit "$status"
