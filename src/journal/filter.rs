//! Filters: which entries the collector keeps, and which fields it drops from them.
//!
//! Decided in-process, entry by entry: `sd_journal_add_match` cannot say NOT, and a match would
//! keep the reader from seeing (and moving its position past) the entries it skips. Globs are
//! fnmatch(3)'s, as systemctl's unit patterns are.

use std::ffi::CString;

use crate::schema::entry::Fields;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The globs of each list, in the order of the config's `keys::GLOB_KEY_DEFS`.
    globs: [Vec<(String, CString)>; 5],
    /// Keep priorities 0..=this; entries without PRIORITY are kept (see `keeps`).
    pub max_priority: Option<u8>,
}

const INCLUDE_UNITS: usize = 0;
const EXCLUDE_UNITS: usize = 1;
const INCLUDE_IDENTIFIERS: usize = 2;
const EXCLUDE_IDENTIFIERS: usize = 3;
const EXCLUDE_FIELDS: usize = 4;

impl Filter {
    /// A filter from the lists of globs (in the order above); Err: the index of the list with
    /// a bad glob, and why.
    pub fn new(
        lists: [Vec<String>; 5],
        max_priority: Option<u8>,
    ) -> Result<Filter, (usize, String)> {
        let mut globs: [Vec<(String, CString)>; 5] = Default::default();
        for (i, (slot, list)) in globs.iter_mut().zip(lists).enumerate() {
            for g in list {
                if g.is_empty() {
                    return Err((i, "an empty glob matches nothing".into()));
                }
                let c = CString::new(g.as_bytes())
                    .map_err(|_| (i, format!("{g:?} contains a NUL byte")))?;
                slot.push((g, c));
            }
        }
        Ok(Filter {
            globs,
            max_priority,
        })
    }

    /// Whether no entry is dropped and no field removed.
    pub fn is_off(&self) -> bool {
        self.globs.iter().all(Vec::is_empty) && self.max_priority.is_none()
    }

    /// Whether the entry is kept. Each include list that is set must match (a unit list matches
    /// `_SYSTEMD_UNIT` or `_SYSTEMD_USER_UNIT`; an identifier list `SYSLOG_IDENTIFIER`), and no
    /// exclude list may. An entry without the field an include list looks at is not kept.
    /// An entry without PRIORITY (or with one that is not a number 0-7) is kept whatever
    /// `max_priority` says: journald gives every entry it receives one, so such an entry comes
    /// from elsewhere (a foreign file, journal-remote), and an unknown priority is no reason to
    /// drop it.
    pub fn keeps(&self, fields: &Fields) -> bool {
        if self.is_off() {
            return true;
        }
        let (mut unit, mut user_unit, mut ident, mut priority) = (None, None, None, None);
        for (name, value) in fields.iter() {
            match name {
                b"_SYSTEMD_UNIT" => unit = unit.or(Some(value)),
                b"_SYSTEMD_USER_UNIT" => user_unit = user_unit.or(Some(value)),
                b"SYSLOG_IDENTIFIER" => ident = ident.or(Some(value)),
                b"PRIORITY" => priority = priority.or(Some(value)),
                _ => {}
            }
        }
        let units = [unit, user_unit];
        let any_unit = |list: usize| units.iter().flatten().any(|u| self.matches(list, u));
        let ident_in = |list: usize| ident.is_some_and(|i| self.matches(list, i));
        let included = |list: usize, found: bool| self.globs[list].is_empty() || found;
        let priority_ok = match (self.max_priority, priority.and_then(priority_number)) {
            (Some(max), Some(p)) => p <= max,
            _ => true,
        };
        included(INCLUDE_UNITS, any_unit(INCLUDE_UNITS))
            && !any_unit(EXCLUDE_UNITS)
            && included(INCLUDE_IDENTIFIERS, ident_in(INCLUDE_IDENTIFIERS))
            && !ident_in(EXCLUDE_IDENTIFIERS)
            && priority_ok
    }

    /// Drops the fields `exclude_fields` names.
    pub fn strip(&self, fields: &mut Fields) {
        if !self.globs[EXCLUDE_FIELDS].is_empty() {
            fields.retain(|name| !self.matches(EXCLUDE_FIELDS, name));
        }
    }

    fn matches(&self, list: usize, text: &[u8]) -> bool {
        // A value with a NUL byte cannot be given to fnmatch: it matches no glob.
        let Ok(text) = CString::new(text) else {
            return false;
        };
        self.globs[list]
            .iter()
            // Safe: both are NUL-terminated strings that outlive the call.
            .any(|(_, g)| unsafe { libc::fnmatch(g.as_ptr(), text.as_ptr(), 0) } == 0)
    }
}

fn priority_number(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'0'..=b'7'] => Some(d - b'0'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[&str]) -> Fields {
        let mut f = Fields::default();
        for field in fields {
            f.push(field.as_bytes());
        }
        f
    }

    fn filter(key: usize, globs: &[&str], max_priority: Option<u8>) -> Filter {
        let mut lists: [Vec<String>; 5] = Default::default();
        lists[key] = globs.iter().map(|g| g.to_string()).collect();
        Filter::new(lists, max_priority).unwrap()
    }

    #[test]
    fn each_list_keeps_and_drops_what_it_says() {
        let nginx = entry(&[
            "_SYSTEMD_UNIT=nginx.service",
            "SYSLOG_IDENTIFIER=nginx",
            "PRIORITY=6",
        ]);
        let user = entry(&["_SYSTEMD_USER_UNIT=app@1.service", "PRIORITY=3"]);
        let kernel = entry(&["SYSLOG_IDENTIFIER=kernel", "PRIORITY=2"]);
        let bare = entry(&["MESSAGE=no priority"]);

        let f = filter(INCLUDE_UNITS, &["nginx.*", "app@*"], None);
        assert!(f.keeps(&nginx) && f.keeps(&user) && !f.keeps(&kernel) && !f.keeps(&bare));
        let f = filter(EXCLUDE_UNITS, &["app@*"], None);
        assert!(f.keeps(&nginx) && !f.keeps(&user) && f.keeps(&kernel));
        let f = filter(INCLUDE_IDENTIFIERS, &["kern?l"], None);
        assert!(!f.keeps(&nginx) && f.keeps(&kernel));
        let f = filter(EXCLUDE_IDENTIFIERS, &["[kn]*"], None);
        assert!(!f.keeps(&nginx) && !f.keeps(&kernel) && f.keeps(&user));
        let f = filter(EXCLUDE_UNITS, &[], Some(3));
        assert!(!f.keeps(&nginx) && f.keeps(&user) && f.keeps(&kernel) && f.keeps(&bare));
    }

    #[test]
    fn excluded_fields_are_dropped() {
        let mut e = entry(&["MESSAGE=hi", "_CMDLINE=secret --token", "_COMM=x"]);
        filter(EXCLUDE_FIELDS, &["_CMD*"], None).strip(&mut e);
        let names: Vec<&[u8]> = e.iter().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"MESSAGE"[..], b"_COMM"]);
    }
}
