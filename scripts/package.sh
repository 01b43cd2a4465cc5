#!/usr/bin/env bash
# Builds the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) from the file lists in Cargo.toml,
# into $CARGO_TARGET_DIR/debian/ and $CARGO_TARGET_DIR/generate-rpm/, with the release binaries the
# tests use (no second DuckDB build). Installs cargo-deb and cargo-generate-rpm when missing.
# A package whose inputs have not changed since it was built is not built again (FORCE=1 rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

# Pinned, so that a package is byte for byte what the tests checked.
declare -A TOOLS=([cargo-deb]=3.8.0 [cargo-generate-rpm]=0.21.1)
for tool in "${!TOOLS[@]}"; do
  version=${TOOLS[$tool]}
  if ! "$tool" --version 2>/dev/null | grep -q " $version\$"; then
    echo "package: installing $tool $version" >&2
    # Built in its own target directory: its dependencies have nothing to share with ours.
    cargo install --quiet --locked --version "$version" "$tool" \
      --target-dir "$(dirname "$CARGO_TARGET_DIR")/tools-target"
  fi
done

cargo build --release --locked --bins
target=$CARGO_TARGET_DIR
# The man pages and completions, from the clap definitions and the config reference.
rm -rf "$target/release/docs"
"$target/release/jp-gen-docs" "$target/release/docs"
# Man pages are installed compressed (Debian policy 12.1, Fedora's packaging guidelines); -n
# leaves the name and time out, so the same page gives the same bytes.
gzip -9n "$target/release/docs/man/"*
inputs=(Cargo.toml Cargo.lock README.md docs LICENSE units packaging "$target/release/journal-parquet"
  "$target/release/jp-flush" "$target/release/docs")
# The inputs' content, not their mtimes: CI works on a fresh clone, where every file is new.
digest=$(find "${inputs[@]}" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
# True when PACKAGE exists and was built from these inputs (its .inputs stamp says so).
fresh() {
  [[ -z ${FORCE:-} && -e $1 && $(cat "$1.inputs" 2>/dev/null) == "$digest" ]]
}

version=$(awk -F'"' '/^version =/{print $2; exit}' Cargo.toml)
deb="$target/debian/journal-parquet_${version}-1_amd64.deb"
if ! fresh "$deb"; then
  # cargo-deb strips the binaries it packs (the build keeps its symbols for backtraces).
  cargo deb --no-build --locked --quiet --output "$deb" >/dev/null
  echo "$digest" >"$deb.inputs"
fi

rpm="$target/generate-rpm/journal-parquet-${version}-1.x86_64.rpm"
if ! fresh "$rpm"; then
  # cargo-generate-rpm does not strip: it reads target/release/* from a staging target directory
  # that holds stripped copies, so both packages carry the same bytes and the same file list.
  staging="$target/rpm-staging"
  mkdir -p "$staging/release" "$target/generate-rpm"
  for bin in journal-parquet jp-flush; do
    strip -o "$staging/release/$bin" "$target/release/$bin"
  done
  rm -rf "$staging/release/docs"
  cp -r "$target/release/docs" "$staging/release/docs"
  cargo generate-rpm --target-dir "$staging" --output "$rpm"
  echo "$digest" >"$rpm.inputs"
fi
ls -l "$deb" "$rpm" | awk '{printf "package: %s (%.1f MB)\n", $NF, $5 / 1e6}' >&2
