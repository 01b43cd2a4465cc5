# Sourced by the scripts: one cargo profile (release) and one target directory outside the
# checkout, so that DuckDB's C++ (~4,000 CPU-seconds) is compiled once per machine and reused by
# every checkout, CI run, test, clippy and package build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/journal-parquet/target}"
if ! command -v cargo >/dev/null && [[ -f "$HOME/.cargo/env" ]]; then
  . "$HOME/.cargo/env"
fi
# The Python that has pyarrow, for tests that read Parquet with a reader that is not ours.
export JP_TEST_PYTHON="${JP_TEST_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/journal-parquet/venv/bin/python}"
# The Debian 12 root filesystems the package tests boot with systemd-nspawn (made by setup.sh).
export JP_E2E_CACHE="${JP_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/journal-parquet/e2e}"
# Tools the tests run that are built from crates.io (s3s-fs), once per machine.
export JP_TOOLS="${JP_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/journal-parquet/tools}"
