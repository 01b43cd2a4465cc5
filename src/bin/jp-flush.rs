use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = journal_parquet::config::FlushArgs::parse();
    journal_parquet::exit_with("jp-flush", || journal_parquet::flush::run(&args))
}
