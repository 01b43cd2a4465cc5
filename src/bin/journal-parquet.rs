use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = journal_parquet::config::CollectorArgs::parse();
    journal_parquet::exit_with("journal-parquet", || journal_parquet::collector::run(&args))
}
