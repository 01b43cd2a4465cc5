//! What is rendered from the key table (`keys`): each key's reference text, the shipped
//! `packaging/config.toml`, journal-parquet.conf(5)'s keys and the guide's key table. The unit
//! tests below fail while the checked-in files differ from what the table renders.

use std::fmt::Write as _;

use super::keys::{Change, Default, Key, Type, KEYS};

impl Type {
    /// The rule, as a sentence for the reference (None: the doc text says it).
    pub(super) fn rule(self) -> Option<String> {
        match self {
            Type::Integer { min, max } => Some(format!("From {min} to {max}.")),
            Type::Choice(names) => Some(format!("One of {}.", names.join(", "))),
            _ => None,
        }
    }
}

impl Key {
    /// The reference's text for the key, as lines: what it does, its rule, its default and
    /// when a change takes effect.
    fn reference_lines(&self) -> Vec<String> {
        let mut text = format!("{} {}", self.summary, self.more);
        if let Some(rule) = self.ty.rule() {
            text = format!("{text} {rule}");
        }
        if let Default::Unset(meaning) = self.default {
            text = format!("{text} Default: {meaning}.");
        }
        if self.change == Change::Restart {
            text += " A change takes effect at a restart of the collector, not at a reload.";
        }
        wrap(&text, 96)
    }
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += word;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The header of the shipped file and of conf(5)'s description.
pub const HEADER: &str = "\
Read by both journal-parquet (the collector) and jp-flush.

Every key is optional: a commented-out key shows its default (or, for a key that is unset by
default, an example). An unknown key or a bad value stops both programs with a message naming
this file and the key (exit 78); check a change with
    journal-parquet --check-config
and apply it with `systemctl reload journal-parquet.service` (the keys that need a restart say
so; jp-flush reads the file at every run). Command-line flags, where a key has one, win over this
file.";

/// The shipped `packaging/config.toml` (installed as /etc/journal-parquet/config.toml).
pub fn shipped_config() -> String {
    let mut out = String::from(
        "# /etc/journal-parquet/config.toml, journal-parquet.conf(5). Generated from\n\
         # src/config/keys.rs.\n#\n",
    );
    for line in HEADER.lines() {
        out += &comment(line);
    }
    for key in KEYS {
        out.push('\n');
        if !key.group.is_empty() {
            for line in key.group.lines() {
                out += &comment(line.trim());
            }
            out += "#\n";
        }
        for line in key.reference_lines() {
            out += &comment(line.trim());
        }
        let _ = writeln!(out, "#{}", key.example_line());
    }
    out
}

fn comment(line: &str) -> String {
    match line.is_empty() {
        true => "#\n".into(),
        false => format!("# {line}\n"),
    }
}

/// The keys as journal-parquet.conf(5) lists them: for each, the group paragraph before it (or
/// ""), its example line and its text.
pub fn reference() -> Vec<(String, String, Vec<String>)> {
    KEYS.iter()
        .map(|k| {
            let lines = k
                .reference_lines()
                .iter()
                .map(|l| l.trim().to_owned())
                .collect();
            let group = k.group.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            (group, k.example_line(), lines)
        })
        .collect()
}

/// The guide's key table (Markdown).
pub fn guide_table() -> String {
    let mut out = String::from(
        "| key | default | a change takes effect | what it does |\n|---|---|---|---|\n",
    );
    for key in KEYS {
        let default = match key.default {
            Default::Value(v) => format!("`{}`", v.trim_matches('"')),
            Default::Unset(meaning) => meaning.to_owned(),
        };
        let change = match key.change {
            Change::Reload => "at a reload",
            Change::Restart => "at a restart",
        };
        let _ = writeln!(
            out,
            "| `{}` | {default} | {change} | {} |",
            key.name, key.summary
        );
    }
    out
}

/// Where the guide's generated table starts and ends.
pub const GUIDE_MARKERS: (&str, &str) = (
    "<!-- config keys: generated from src/config/keys.rs, `jp-gen-docs --write-sources` -->\n",
    "<!-- end of config keys -->\n",
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the shipped config against drifting from the table: it is what the table renders.
    #[test]
    fn shipped_config_is_generated_from_the_key_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml");
        let shipped = std::fs::read_to_string(path).unwrap();
        assert!(
            shipped == shipped_config(),
            "{path} is not what src/config/keys.rs renders: run \
             `scripts/cargo.sh run --release --bin jp-gen-docs -- --write-sources`"
        );
    }

    /// Guards the guide's key table against drifting from the table.
    #[test]
    fn guide_key_table_is_generated_from_the_key_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide.md");
        let guide = std::fs::read_to_string(path).unwrap();
        let (start, end) = GUIDE_MARKERS;
        let table = guide
            .split_once(start)
            .and_then(|(_, rest)| rest.split_once(end))
            .map(|(t, _)| t);
        assert!(
            table == Some(guide_table().as_str()),
            "{path}'s key table is not what src/config/keys.rs renders: run \
             `scripts/cargo.sh run --release --bin jp-gen-docs -- --write-sources`"
        );
    }
}
