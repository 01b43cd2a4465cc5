//! One journal entry as it is read: what the journal says of it (`EntryMeta`) and its data
//! objects, `NAME=value` bytes (`Fields`).

/// What the journal says about an entry outside its data objects.
pub struct EntryMeta<'a> {
    pub cursor: &'a str,
    pub realtime_usec: u64,
    pub monotonic_usec: u64,
    pub boot_id: [u8; 16],
}

/// The data objects of one entry, copied out of libsystemd's mmap into one reusable buffer.
#[derive(Default)]
pub struct Fields {
    bytes: Vec<u8>,
    /// (start, position of '=' or end, end) of each `NAME=value` in `bytes`.
    spans: Vec<(usize, usize, usize)>,
}

impl Fields {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    pub fn push(&mut self, raw: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(raw);
        // A data object without '=' is malformed; it is kept as a name with an empty value.
        let eq = raw.iter().position(|&b| b == b'=').unwrap_or(raw.len());
        self.spans.push((start, start + eq, start + raw.len()));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|&(s, eq, e)| {
            let value = if eq < e {
                &self.bytes[eq + 1..e]
            } else {
                &[][..]
            };
            (&self.bytes[s..eq], value)
        })
    }

    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Keeps only the fields whose name `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let bytes = &self.bytes;
        self.spans.retain(|&(s, eq, _)| keep(&bytes[s..eq]));
    }
}
