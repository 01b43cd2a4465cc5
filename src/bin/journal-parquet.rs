use clap::Parser;

fn main() -> std::process::ExitCode {
    journal_parquet::journal_parquet_main(journal_parquet::config::CollectorArgs::parse())
}
