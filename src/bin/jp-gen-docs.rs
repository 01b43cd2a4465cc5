//! Writes the man pages and shell completions into DIR (for scripts/package.sh; not packaged).
//! `--write-sources`: rewrites, in the checkout it is run from, the files rendered from the
//! config key table (packaging/config.toml, the guide's key table).

fn main() -> std::process::ExitCode {
    let arg = std::env::args_os().nth(1).unwrap_or_else(|| "docs".into());
    journal_parquet::exit_with("jp-gen-docs", || match arg.to_str() {
        Some("--write-sources") => journal_parquet::config::docs::write_sources(".".as_ref()),
        _ => journal_parquet::config::docs::write_all(arg.as_ref()),
    })
}
