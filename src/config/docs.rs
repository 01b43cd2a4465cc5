//! Man pages and shell completions for the packages, generated from the clap definitions and
//! from the config key table (`keys`), so that neither can drift from what the programs accept.
//! `jp-gen-docs DIR` writes them; scripts/package.sh runs it before building the packages.
//! `jp-gen-docs --write-sources` rewrites what the checkout holds of the key table (the shipped
//! `packaging/config.toml` and the guide's table), which unit tests hold in step.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::config::reference;
use crate::config::{CollectorArgs, FlushArgs};

/// The exit statuses both programs document (see `exit_with`).
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success."),
    (
        "1",
        "Failure; the error is logged (journal-parquet query: printed on standard error).",
    ),
    (
        "2",
        "Usage error: an unknown flag, a bad flag value, or no SQL.",
    ),
    (
        "75",
        "The buffer could not be had in time (another jp-flush, or a collector that did not seal \
         its segment within handoff_timeout_sec); the next run does the work.",
    ),
    (
        "77",
        "Started as root on a state or data directory of another user, and that user could \
         not be become (or state and data belong to two users): run it as the owner, e.g. \
         sudo -u journal-parquet.",
    ),
    (
        "78",
        "Bad configuration: the message names the file and the key (journal-parquet.conf(5)).",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "/etc/journal-parquet/config.toml",
        "The configuration (journal-parquet.conf(5)).",
    ),
    (
        "/var/lib/journal-parquet/data/HOST/YYYY/MM/DD/YYYYMMDD-HHmm.parquet",
        "The archive: one Parquet file per host and UTC minute.",
    ),
    (
        "/var/lib/journal-parquet/data/journal.duckdb",
        "The catalogue: the views journal and entries, for the DuckDB CLI.",
    ),
    (
        "/var/lib/journal-parquet/buffer/",
        "The buffer: entries read but not written to Parquet yet.",
    ),
    (
        "/etc/journal-parquet/web.token",
        "The web console's token (journal-parquet web, jp-web.socket): made at install, mode \
         0640, group journal-parquet; every request needs it.",
    ),
    (
        "/etc/journal-parquet/upload.env",
        "Turns on jp-upload.timer, which copies new and rewritten minute files to object storage \
         with rclone(1) (/usr/libexec/journal-parquet/jp-upload; an example is in \
         /usr/share/doc/journal-parquet/upload.env.example).",
    ),
];

const SEE_ALSO: &str = "journal-parquet(8), journal-parquet-query(8), journal-parquet-web(8), \
    jp-flush(8), \
    journal-parquet.conf(5), journalctl(1), systemd.journal-fields(7), \
    /usr/share/doc/journal-parquet/guide.md";

fn escape(text: &str) -> String {
    // roff: a leading . or ' starts a request; \ starts an escape.
    let text = text.replace('\\', "\\e");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

fn section(out: &mut String, title: &str, items: &[(&str, &str)]) {
    let _ = writeln!(out, ".SH \"{title}\"");
    for (term, text) in items {
        let _ = writeln!(out, ".TP\n\\fB{}\\fR\n{}", escape(term), escape(text));
    }
}

/// A man page of a clap command, with the sections clap does not know.
fn command_page(cmd: clap::Command, name: &'static str) -> Result<String> {
    let man = clap_mangen::Man::new(cmd.name(name))
        .title(name.to_uppercase())
        .section("8")
        .source(format!("journal-parquet {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("failed to render the man page of {name}"))?;
    let mut out = String::from_utf8(page).context("a man page is UTF-8")?;
    section(&mut out, "EXIT STATUS", EXIT_STATUS);
    section(&mut out, "FILES", FILES);
    let _ = writeln!(out, ".SH \"SEE ALSO\"\n{}", escape(SEE_ALSO));
    Ok(out)
}

/// Comment lines as roff text; an indented line (a command to type) on a line of its own.
fn text_lines(out: &mut String, lines: &[String]) {
    for line in lines {
        if line.starts_with("    ") {
            let _ = writeln!(out, ".RS\n.nf\n{}\n.fi\n.RE", escape(line.trim()));
        } else {
            let _ = writeln!(out, "{}", escape(line));
        }
    }
}

/// journal-parquet.conf(5), from the key table.
fn config_page() -> String {
    let mut out = format!(
        ".TH JOURNAL-PARQUET.CONF 5 \"\" \"journal-parquet {}\" \"File Formats\"\n\
         .SH NAME\njournal-parquet.conf \\- configuration of journal-parquet and jp-flush\n\
         .SH SYNOPSIS\n/etc/journal-parquet/config.toml\n.SH DESCRIPTION\n",
        env!("CARGO_PKG_VERSION")
    );
    let header: Vec<String> = reference::HEADER.lines().map(str::to_owned).collect();
    text_lines(&mut out, &header);
    out.push_str(".SH KEYS\n");
    for (group, example, text) in reference::reference() {
        if !group.is_empty() {
            let _ = writeln!(out, ".PP\n{}", escape(&group));
        }
        let _ = writeln!(out, ".TP\n\\fB{}\\fR", escape(&example));
        text_lines(&mut out, &text);
    }
    let _ = writeln!(out, ".SH \"SEE ALSO\"\n{}", escape(SEE_ALSO));
    out
}

/// Rewrites, in the checkout at `root`, what is rendered from the key table: the shipped
/// config and the guide's key table.
pub fn write_sources(root: &Path) -> Result<()> {
    let config = root.join("packaging/config.toml");
    std::fs::write(&config, reference::shipped_config())
        .with_context(|| format!("failed to write {}", config.display()))?;
    let guide = root.join("docs/guide.md");
    let text = std::fs::read_to_string(&guide)
        .with_context(|| format!("failed to read {}", guide.display()))?;
    let (start, end) = reference::GUIDE_MARKERS;
    let (before, rest) = text
        .split_once(start)
        .with_context(|| format!("{} lacks the line {start:?}", guide.display()))?;
    let (_, after) = rest
        .split_once(end)
        .with_context(|| format!("{} lacks the line {end:?}", guide.display()))?;
    let new = format!("{before}{start}{}{end}{after}", reference::guide_table());
    std::fs::write(&guide, new).with_context(|| format!("failed to write {}", guide.display()))
}

/// Writes `DIR/man/*.{5,8}` and `DIR/completions/{bash,fish}/*` (for both programs).
pub fn write_all(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("failed to create {}", d.display()))?;
    }
    let collector = CollectorArgs::command();
    let query = collector
        .find_subcommand("query")
        .cloned()
        .context("journal-parquet has a query subcommand")?;
    let web = collector
        .find_subcommand("web")
        .cloned()
        .context("journal-parquet has a web subcommand")?;
    let pages = [
        (
            "journal-parquet-web.8",
            command_page(web, "journal-parquet-web")?,
        ),
        (
            "journal-parquet.8",
            command_page(collector, "journal-parquet")?,
        ),
        (
            "journal-parquet-query.8",
            command_page(query, "journal-parquet-query")?,
        ),
        (
            "jp-flush.8",
            command_page(FlushArgs::command(), "jp-flush")?,
        ),
        ("journal-parquet.conf.5", config_page()),
    ];
    for (name, text) in pages {
        let path = man.join(name);
        std::fs::write(&path, text)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    for (name, mut cmd) in [
        ("journal-parquet", CollectorArgs::command()),
        ("jp-flush", FlushArgs::command()),
    ] {
        for (shell, file) in [
            (clap_complete::Shell::Bash, format!("bash/{name}")),
            (clap_complete::Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let path = completions.join(file);
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut text);
            std::fs::create_dir_all(path.parent().unwrap_or(&completions))
                .and_then(|()| std::fs::write(&path, text))
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys;

    /// Guards "generated from the definitions": every flag of every program, and every key of
    /// the config reference, is in its man page.
    #[test]
    fn man_pages_hold_every_flag_and_every_config_key() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path()).unwrap();
        let page = |name: &str| std::fs::read_to_string(dir.path().join("man").join(name)).unwrap();
        let collector = CollectorArgs::command();
        let query = collector.find_subcommand("query").unwrap().clone();
        let web = collector.find_subcommand("web").unwrap().clone();
        for (cmd, name) in [
            (collector, "journal-parquet.8"),
            (query, "journal-parquet-query.8"),
            (web, "journal-parquet-web.8"),
            (FlushArgs::command(), "jp-flush.8"),
        ] {
            let text = page(name);
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long() {
                    assert!(
                        text.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                        "{name} lacks --{long}"
                    );
                }
            }
            assert!(text.contains("EXIT STATUS"), "{name}");
        }
        let conf = page("journal-parquet.conf.5");
        for key in keys::KEYS {
            assert!(
                conf.contains(&format!("\\fB{}", escape(key.name))),
                "conf(5) lacks {}",
                key.name
            );
        }
        let bash =
            std::fs::read_to_string(dir.path().join("completions/bash/journal-parquet")).unwrap();
        assert!(bash.contains("--include-unit") && bash.contains("query"));
    }
}
