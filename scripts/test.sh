#!/usr/bin/env bash
# The whole test suite, set-up included: system packages, a journald, formatting, clippy, the
# unit and integration tests, the packages (built first) and the end-to-end tests in a booted
# Debian 12 guest. Tests run as root (they start journald instances and mount tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh --for-tests
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
scripts/package.sh
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
