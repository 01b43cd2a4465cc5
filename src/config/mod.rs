//! Command lines, the TOML configuration file, and the settings both binaries run with.
//!
//! Precedence: command-line flag, then the config file, then the systemd environment
//! (`$STATE_DIRECTORY`), then a default relative to the working directory. The data directory
//! defaults to `STATE/data` whenever the state directory is given (flag, key or environment), as
//! under the unit: `jp-flush --state-dir /var/lib/journal-parquet` run from /tmp must write the
//! archive where the service does, not into /tmp/data. An unknown key or a bad
//! value in the config file is an error naming the file and the key (exit 78, EX_CONFIG).

pub mod docs;

pub mod keys;
pub mod reference;

mod args;
mod settings;
mod values;

pub use args::*;
pub use keys::GLOB_KEYS;
pub use settings::*;
pub use values::{Effective, DEFAULT_CONFIG};

/// The log levels, for the flag, the config key and the environment variable alike.
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
const LOG_LEVEL_ENV: &str = "JOURNAL_PARQUET_LOG_LEVEL";

crate::sys::message_error! {
    /// A configuration problem: the binaries exit with 78 (EX_CONFIG) for it.
    BadConfig
}

crate::sys::message_error! {
    /// A command line that cannot be run as given (beyond what argument parsing checks): exit 2,
    /// as for argument errors.
    Usage
}

/// Used by the binaries' `main` to turn an error into the documented exit code.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<BadConfig>().is_some() {
        78
    } else if err.downcast_ref::<Usage>().is_some() {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn common_with(config: &Path) -> CommonArgs {
        CommonArgs {
            state_dir: None,
            data_dir: None,
            config: Some(config.to_path_buf()),
            log_level: None,
            check_config: false,
        }
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "commit_intervall_ms = 5\n").unwrap();
        let err = Settings::resolve(&common_with(&path)).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("commit_intervall_ms"), "{text}");
        assert_eq!(exit_code_for(&err), 78);
    }

    #[test]
    fn bad_value_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "duckdb_memory_limit = \"lots\"\n").unwrap();
        let err = Settings::resolve(&common_with(&path)).unwrap_err();
        assert!(format!("{err:#}").contains("duckdb_memory_limit"));
        assert_eq!(exit_code_for(&err), 78);
    }

    /// Guards the data directory's default: STATE/data whenever the state directory is given,
    /// by the flag or by the key, as under the unit.
    #[test]
    fn the_data_dir_follows_a_given_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "").unwrap();
        let mut common = common_with(&path);
        common.state_dir = Some("/srv/jp".into());
        let s = Settings::resolve(&common).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/jp/data"));
        std::fs::write(&path, "state_dir = \"/srv/key\"\n").unwrap();
        let s = Settings::resolve(&common_with(&path)).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/key/data"));
    }

    /// Guards paths DuckDB would read as globs, or could not name, and a batch size whose string
    /// columns would pass 2 GiB: refused at configuration time, naming the key (exit 78).
    #[test]
    fn directories_duckdb_cannot_take_and_huge_batches_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for (key, value) in [
            ("data_dir", "/srv/archive[1]"),
            ("state_dir", "/srv/*"),
            ("data_dir", "/srv/a?b"),
            ("data_dir", "/srv/{a,b}"),
        ] {
            std::fs::write(&path, format!("{key} = {value:?}\n")).unwrap();
            let err = Settings::resolve(&common_with(&path)).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{err:#}");
            assert_eq!(exit_code_for(&err), 78, "{key} = {value}");
        }
        std::fs::write(&path, "").unwrap();
        let mut common = common_with(&path);
        common.state_dir = Some(PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/\xff")));
        let err = Settings::resolve(&common).unwrap_err();
        assert!(format!("{err:#}").contains("UTF-8"), "{err:#}");
        assert_eq!(exit_code_for(&err), 78);
        for (mib, ok) in [(1024, true), (1025, false), (4096, false)] {
            std::fs::write(&path, format!("max_batch_mib = {mib}\n")).unwrap();
            let resolved = Settings::resolve(&common_with(&path));
            assert_eq!(resolved.is_ok(), ok, "max_batch_mib = {mib}");
        }
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "state_dir = \"/from/file\"\ndata_dir = \"/d\"\n").unwrap();
        let mut common = common_with(&path);
        common.state_dir = Some("/from/flag".into());
        let s = Settings::resolve(&common).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/from/flag"));
        assert_eq!(s.data_dir, PathBuf::from("/d"));
        assert_eq!(s.buffer().dir(), Path::new("/from/flag/buffer"));
    }

    /// Guards the reload rules against drifting from the key table: a reload keeps exactly the
    /// keys `keys::Change::Restart` marks (in `--check-config`'s output and in the fields the
    /// programs read), names each of them, and takes every other key's new value.
    #[test]
    fn a_reload_keeps_exactly_the_keys_that_need_a_restart() {
        use keys::{Change, Default, KEYS};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let old = Settings::resolve(&common_with(&path).tap_write("")).unwrap();
        // Every key set to a value other than its default (or its example).
        let mut text = String::new();
        for key in KEYS.iter().filter(|k| k.name != "namespace") {
            let value = match (key.ty, key.default) {
                (keys::Type::Integer { min, .. }, _) => (min + 1).to_string(),
                (keys::Type::Choice(names), _) => format!("{:?}", names[names.len() - 1]),
                (_, Default::Unset(_)) => key.example.to_owned(),
                (keys::Type::MemoryLimit, _) => "\"300MB\"".to_owned(),
                (keys::Type::Path, _) => "\"/elsewhere/file\"".to_owned(),
                (_, Default::Value(v)) => unreachable!("{}: {v}", key.name),
            };
            text += &format!("{} = {value}\n", key.name);
        }
        let new = Settings::resolve(&common_with(&path).tap_write(&text)).unwrap();
        let restart: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.change == Change::Restart && k.name != "namespace")
            .map(|k| k.name)
            .collect();
        assert_eq!(old.needs_restart(&new), restart);
        let reloaded = old.reloaded(new.clone());
        let line = |s: &Settings, key: &str| {
            s.to_toml(None)
                .lines()
                .find(|l| {
                    l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} "))
                })
                .unwrap()
                .to_owned()
        };
        for key in KEYS {
            let want = match key.change {
                Change::Restart => &old,
                Change::Reload => &new,
            };
            assert_eq!(
                line(&reloaded, key.name),
                line(want, key.name),
                "{}",
                key.name
            );
        }
        assert_eq!(reloaded.state_dir, old.state_dir);
        assert_eq!(reloaded.data_dir, old.data_dir);
        assert_eq!(reloaded.source, old.source);
        assert_eq!(reloaded.duckdb_memory_limit, old.duckdb_memory_limit);
        assert_eq!(reloaded.flush_memory_limit, new.flush_memory_limit);
        assert_eq!(reloaded.commit_interval, new.commit_interval);
    }

    trait TapWrite {
        fn tap_write(self, text: &str) -> Self;
    }

    impl TapWrite for CommonArgs {
        /// Writes `text` to the config file these arguments name.
        fn tap_write(self, text: &str) -> Self {
            std::fs::write(self.config.as_ref().unwrap(), text).unwrap();
            self
        }
    }
}
