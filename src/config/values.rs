//! The values given for the keys of `keys::KEYS` (by the file, a flag or the environment), each
//! checked against its key's type and rule, and the values in effect once resolved (what
//! `--check-config` prints and what a reload compares).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::keys::{self, Change, Default, Key, Type};
use super::BadConfig;

/// The config file read when `--config` is not given; a missing default file means defaults.
pub const DEFAULT_CONFIG: &str = "/etc/journal-parquet/config.toml";

/// Where a value came from, for the error that names it.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Flag(&'static str),
    Env(&'static str),
}

/// The values given, by key name.
#[derive(Debug)]
pub(super) struct Given {
    values: BTreeMap<&'static str, (toml::Value, Origin)>,
    /// The config file read, if any.
    pub(super) file: Option<PathBuf>,
    effective: Effective,
}

/// The value of each key in effect (absent: unset).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effective(BTreeMap<&'static str, toml::Value>);

impl Effective {
    /// The keys that differ between `self` and `new` and take effect only at a restart.
    pub fn needing_restart(&self, new: &Effective) -> Vec<&'static str> {
        keys::KEYS
            .iter()
            .filter(|k| k.change == Change::Restart)
            .filter(|k| self.0.get(k.name) != new.0.get(k.name))
            .map(|k| k.name)
            .collect()
    }

    /// `new`, with the keys that need a restart as they are in `self`.
    pub fn reloaded(&self, new: &Effective) -> Effective {
        let mut out = new.clone();
        for key in keys::KEYS.iter().filter(|k| k.change == Change::Restart) {
            match self.0.get(key.name) {
                Some(v) => out.0.insert(key.name, v.clone()),
                None => out.0.remove(key.name),
            };
        }
        out
    }

    /// As a config file that would give these values, every key in the reference's order.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for key in keys::KEYS {
            match (self.0.get(key.name), key.default) {
                (Some(value), _) => out += &format!("{} = {value}\n", key.name),
                (None, Default::Unset(meaning)) => {
                    out += &format!("# {} unset: {meaning}\n", key.name)
                }
                (None, Default::Value(_)) => out += &format!("# {} unset\n", key.name),
            }
        }
        out
    }
}

impl Given {
    /// Reads the config file: the given one (which must exist), else the default one if
    /// present. Every key must be known and its value pass its key's rule.
    pub(super) fn load(given: Option<&Path>) -> Result<Given> {
        let path = match given {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
            None => {
                return Ok(Given {
                    values: BTreeMap::new(),
                    file: None,
                    effective: Effective::default(),
                })
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| BadConfig(format!("failed to read {}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            BadConfig(format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_end().replace('\n', " ")
            ))
        })?;
        let mut given = Given {
            values: BTreeMap::new(),
            file: Some(path.clone()),
            effective: Effective::default(),
        };
        for (name, value) in table {
            let Some(key) = keys::find(&name) else {
                return Err(BadConfig(format!(
                    "{}: unknown key `{name}` (journal-parquet.conf(5) lists the keys)",
                    path.display()
                ))
                .into());
            };
            given.set(key, value, Origin::File(path.clone()))?;
        }
        Ok(given)
    }

    fn set(&mut self, key: &'static Key, value: toml::Value, origin: Origin) -> Result<()> {
        let checked = check(key, &value);
        self.values.insert(key.name, (value, origin));
        checked.map_err(|why| self.bad(key, &why).into())
    }

    /// A flag's value for `key`: it beats the file's.
    pub(super) fn set_flag(
        &mut self,
        key: &'static Key,
        flag: &'static str,
        value: toml::Value,
    ) -> Result<()> {
        self.set(key, value, Origin::Flag(flag))
    }

    /// An environment variable's value for `key`, when neither a flag nor the file gives one.
    pub(super) fn fall_back(
        &mut self,
        key: &'static Key,
        var: &'static str,
        value: Option<String>,
    ) -> Result<()> {
        match (self.values.contains_key(key.name), value) {
            (false, Some(text)) => self.set(key, text.into(), Origin::Env(var)),
            _ => Ok(()),
        }
    }

    /// Forgets what the file gave for `key` (a flag that replaces it).
    pub(super) fn forget(&mut self, key: &'static Key) {
        self.values.remove(key.name);
    }

    /// The error for a bad value of `key`, naming where the value came from.
    pub(super) fn bad(&self, key: &Key, why: &str) -> BadConfig {
        match self.values.get(key.name).map(|(_, o)| o) {
            Some(Origin::File(path)) => {
                BadConfig(format!("{}: key `{}`: {why}", path.display(), key.name))
            }
            Some(Origin::Flag(flag)) => BadConfig(format!("the flag --{flag}: {why}")),
            Some(Origin::Env(var)) => BadConfig(format!("environment variable ${var}: {why}")),
            None => BadConfig(format!("key `{}`: {why}", key.name)),
        }
    }

    /// The value given for `key`, or its default; recorded as in effect.
    fn value(&mut self, key: &'static Key) -> Option<toml::Value> {
        let value = match (self.values.get(key.name), key.default) {
            (Some((v, _)), _) => Some(v.clone()),
            (None, Default::Value(text)) => Some(default_value(key, text)),
            (None, Default::Unset(_)) => None,
        };
        if let Some(v) = &value {
            self.effective.0.insert(key.name, v.clone());
        }
        value
    }

    /// Records `value` as the one in effect for `key` (a value worked out from others).
    pub(super) fn record(&mut self, key: &'static Key, value: toml::Value) {
        self.effective.0.insert(key.name, value);
    }

    pub(super) fn integer(&mut self, key: &'static Key) -> Option<i64> {
        self.value(key).and_then(|v| v.as_integer())
    }

    /// An integer key's value (every integer key's range starts at 0 or above).
    pub(super) fn unsigned(&mut self, key: &'static Key) -> Option<u64> {
        self.integer(key).and_then(|n| u64::try_from(n).ok())
    }

    pub(super) fn string(&mut self, key: &'static Key) -> Option<String> {
        self.value(key).and_then(|v| v.as_str().map(str::to_owned))
    }

    pub(super) fn path(&mut self, key: &'static Key) -> Option<PathBuf> {
        self.string(key).map(PathBuf::from)
    }

    pub(super) fn globs(&mut self, key: &'static Key) -> Vec<String> {
        let list = self.value(key);
        let items = list.as_ref().and_then(|v| v.as_array());
        items
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The values in effect (every getter called records its key's).
    pub(super) fn into_effective(self) -> Effective {
        self.effective
    }
}

/// A default as its TOML value (the table's defaults are checked by a unit test of `keys`).
fn default_value(key: &Key, text: &str) -> toml::Value {
    let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {text}"));
    match parsed.ok().and_then(|mut t| t.remove("v")) {
        Some(v) => v,
        None => unreachable!("the default of {} is not TOML: {text}", key.name),
    }
}

/// Whether `value` passes `key`'s type and rule; Err says why not.
pub(super) fn check(key: &Key, value: &toml::Value) -> Result<(), String> {
    let wrong_type = || {
        format!(
            "expected {}, found {}",
            key.ty.toml_kind(),
            value.type_str()
        )
    };
    match key.ty {
        Type::Integer { min, max } => {
            let n = value.as_integer().ok_or_else(wrong_type)?;
            match (min..=max).contains(&n) {
                true => Ok(()),
                false => Err(format!("must be between {min} and {max}")),
            }
        }
        Type::Globs => {
            let list = value.as_array().ok_or_else(wrong_type)?;
            match list.iter().all(toml::Value::is_str) {
                true => Ok(()),
                false => Err(wrong_type()),
            }
        }
        ty => check_text(ty, value.as_str().ok_or_else(wrong_type)?),
    }
}

fn check_text(ty: Type, text: &str) -> Result<(), String> {
    let ok = match ty {
        Type::Choice(names) if !names.contains(&text) => {
            return Err(format!("{text:?} is not one of {}", names.join(", ")))
        }
        // journald's own rule for namespace names (systemd's log_namespace_name_valid).
        Type::Namespace => {
            !text.is_empty()
                && text.len() <= 64
                && !text.starts_with(['.', '-'])
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        }
        Type::MemoryLimit => valid_memory_limit(text),
        Type::Span => crate::archive::retention::parse_span(text).is_some(),
        Type::Size => crate::archive::retention::parse_size(text).is_some(),
        _ => true,
    };
    let example = match ty {
        Type::Namespace => "a journal namespace name (letters, digits, _ - .)",
        Type::MemoryLimit => "a memory limit such as \"256MB\" or \"1GB\"",
        Type::Span => "a time span such as \"400d\" or \"12h\"",
        Type::Size => "a size such as \"50G\" or \"512M\"",
        _ => "",
    };
    match ok {
        true => Ok(()),
        false => Err(format!("{text:?} is not {example}")),
    }
}

fn valid_memory_limit(text: &str) -> bool {
    let t = text.trim().to_ascii_uppercase();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["B", "KB", "MB", "GB", "KIB", "MIB", "GIB"].contains(&unit)
}
