#!/usr/bin/env bash
# Installs what building, running and testing journal-parquet need on Debian 12, and starts a
# journald when none runs; with --for-tests, also what the tests use: the readers from PyPI, Java
# for Spark, rclone, an S3 server, promtool, the guests. Idempotent: a second run installs nothing and starts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

# Build: pkg-config + libsystemd-dev for libsystemd-sys, g++ for DuckDB's bundled C++.
# Tests: systemd (journald, journalctl), systemd-journal-remote (corpus files), python3 (the
# corpus generator; venv for pyarrow), bsdutils (logger).
# install_missing PACKAGE...: installs those of the Debian packages that are not installed yet.
install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
  fi
}
install_missing pkg-config libsystemd-dev g++ systemd systemd-journal-remote python3 python3-venv \
  bsdutils

# A machine whose PID 1 is not systemd (a container, a CI runner) has no journald: start one, so
# that the collector has a system journal to read and the tests a journald to write to.
# (A socket file can outlive its journald, since /run is not always a tmpfs: try connecting.)
journald_listens() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.connect(sys.argv[1])' \
    /run/systemd/journal/socket 2>/dev/null
}
if ! journald_listens; then
  echo "setup: no journald runs here; starting /lib/systemd/systemd-journald" >&2
  $SUDO setsid /lib/systemd/systemd-journald </dev/null >/dev/null 2>&1 &
  for _ in $(seq 100); do journald_listens && break; sleep 0.1; done
  journald_listens || { echo "setup: journald did not start" >&2; exit 1; }
fi

# The package tests: systemd-nspawn boots a Debian 12 guest (debootstrap makes it, zstd caches
# it), rpm reads and installs the .rpm, dpkg-deb reads the .deb, lintian and rpmlint check both
# against the distributions' rules. Rootfs images are built once per
# machine into $JP_E2E_CACHE (about a minute each) and reused by every run.
if [[ ${1:-} == --for-tests ]]; then
  install_missing systemd-container debootstrap rpm zstd lintian rpmlint
  for image in bookworm:"" bookworm-rpm:rpm; do
    name=${image%%:*} extra=${image#*:}
    if [[ ! -e $JP_E2E_CACHE/$name.tar.zst ]]; then
      echo "setup: building the test guest $JP_E2E_CACHE/$name.tar.zst" >&2
      # shellcheck disable=SC2086 # $extra is a package list
      $SUDO tests/e2e/build-rootfs.sh "$JP_E2E_CACHE/$name.tar.zst" $extra
    fi
  done
fi

# The metrics tests: promtool (package prometheus) checks the files, and a node_exporter started
# by the test on loopback scrapes them. Installed without starting their services: on a host
# with systemd their postinst would start a Prometheus server and an exporter on every address
# (a policy-rc.d of our own, for the install only, when the machine has none).
if [[ ${1:-} == --for-tests ]] && ! command -v promtool >/dev/null; then
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  install_missing prometheus prometheus-node-exporter
fi

# The readers that are not ours, from PyPI in a virtualenv of our own: pyarrow and Polars read
# every Parquet file the tests write; DuckDB (and its CLI), DataFusion, chDB, Spark and pyiceberg
# (with SQLAlchemy for its SQLite catalog) read the archive in the readers test. Pinned to the
# versions the tests were written against: a new release must not turn CI red by itself.
# Selenium drives Debian's chromium in the web console's browser test.
PYPI=(pyarrow==26.0.1 polars==2.1.0 duckdb==2.0.1 duckdb-cli==1.5.6 datafusion==55.0.0
  chdb==4.4.0 pyspark==4.3.0 'pyiceberg[sql-sqlite]==0.12.0' selenium==4.51.0)
venv=$(dirname "$(dirname "$JP_TEST_PYTHON")")
if [[ ${1:-} == --for-tests ]] && ! "$JP_TEST_PYTHON" -m pip freeze 2>/dev/null | grep -qx 'selenium==4.51.0'; then
  echo "setup: installing ${PYPI[*]} into $venv" >&2
  python3 -m venv "$venv"
  "$JP_TEST_PYTHON" -m pip install -q --disable-pip-version-check "${PYPI[@]}"
fi

# Spark runs on Java 17; rclone is what the upload unit runs; s3s-fs is the S3 server the upload
# test runs on loopback, built once per machine (0.14.1: later ones need a newer rustc than
# Debian's machines here have) into its own directory, like cargo-deb.
if [[ ${1:-} == --for-tests ]]; then
  # The web console's browser test: Debian's chromium and its driver (headless).
  install_missing openjdk-17-jre-headless rclone chromium chromium-driver
  if [[ ! -x $JP_TOOLS/bin/s3s-fs ]]; then
    echo "setup: building s3s-fs 0.14.1 into $JP_TOOLS" >&2
    cargo install --quiet --locked --version 0.14.1 --features binary s3s-fs --root "$JP_TOOLS" \
      --target-dir "$(dirname "$CARGO_TARGET_DIR")/tools-target"
  fi
fi
