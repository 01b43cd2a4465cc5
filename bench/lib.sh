# Sourced by bench/flush-files.sh and bench/questions.sh (from the checkout's root): the release
# build in the shared target directory, a work directory removed at exit, and an archive made
# from a generated corpus.
. scripts/env.sh
cargo build --release --locked --quiet
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /var/tmp/jp-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
: >"$WORK/config.toml"
OURS=(--state-dir "$WORK/state" --data-dir "$WORK/data" --config "$WORK/config.toml")

# corpus ARGS...: journal files in WORK/c made by the project's generator (seed 1).
corpus() {
  python3 tests/tools/gen_journal.py "$@" --seed 1 --quiet --journal "$WORK/c"
}

# backfill: the corpus read into the buffer (`--from-head --once`).
backfill() {
  "$BIN/journal-parquet" "${OURS[@]}" --directory "$WORK/c" --from-head --once 2>/dev/null
}
