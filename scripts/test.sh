#!/usr/bin/env bash
# The whole test suite, set-up included: system packages, a journald, formatting, clippy, the
# unit and integration tests. Tests run as root (they start journald instances and mount tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh --for-tests
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked "$@"
