//! Writes the man pages and shell completions into DIR (for scripts/package.sh; not packaged).

fn main() -> std::process::ExitCode {
    let dir = std::env::args_os().nth(1).unwrap_or_else(|| "docs".into());
    journal_parquet::exit_with("jp-gen-docs", || {
        journal_parquet::config::docs::write_all(dir.as_ref())
    })
}
