//! The seal protocol, as one state: who asked for a seal (jp-flush, a live query), whether it
//! runs on the commit thread, and who waits for the next one. Each transition is a method that
//! checks the state it starts from, so that a peer is answered once, by the seal it waited for.

use std::time::Instant;

use crate::buffer::handoff::Peer;

pub(super) enum Seals {
    /// Nobody waits for a seal.
    Idle,
    /// Asked for, not started yet: a seal starts once no commit is in flight (one at a time).
    Asked { since: Instant, peers: Vec<Peer> },
    /// Running on the commit thread for `peers`; those in `next` asked meanwhile and wait for the
    /// seal after it (this one may already have taken rows they expect to find sealed).
    Sealing {
        since: Instant,
        peers: Vec<Peer>,
        next: Vec<Peer>,
    },
}

impl Seals {
    /// A peer asks for a seal.
    pub(super) fn ask(&mut self, peer: Peer) {
        match self {
            Seals::Idle => {
                *self = Seals::Asked {
                    since: Instant::now(),
                    peers: vec![peer],
                }
            }
            Seals::Asked { peers, .. } => peers.push(peer),
            Seals::Sealing { next, .. } => next.push(peer),
        }
    }

    /// Whether a seal is asked for and not started.
    pub(super) fn asked(&self) -> bool {
        matches!(self, Seals::Asked { .. })
    }

    /// The seal asked for has started on the commit thread (Asked → Sealing).
    pub(super) fn started(&mut self) {
        if let Seals::Asked { since, peers } = std::mem::replace(self, Seals::Idle) {
            *self = Seals::Sealing {
                since,
                peers,
                next: Vec::new(),
            };
        }
    }

    /// The seal asked for was done at once, on this thread (a re-read): everyone who asked gets
    /// `open` (Asked → Idle).
    pub(super) fn done_at_once(&mut self, open: u64) {
        if let Seals::Asked { peers, .. } = std::mem::replace(self, Seals::Idle) {
            for peer in peers {
                peer.answer(open);
            }
        }
    }

    /// A seal on the commit thread finished (or failed: `open` is then the segment that stays
    /// open, and the peers take those below it). Answers the peers it ran for; those who asked
    /// meanwhile wait for the next (Sealing → Asked or Idle). Returns when the answered peers
    /// asked, or None when the seal was the collector's own (`--flush-every`).
    pub(super) fn finished(&mut self, open: u64) -> Option<Instant> {
        match std::mem::replace(self, Seals::Idle) {
            Seals::Sealing { since, peers, next } => {
                for peer in peers {
                    peer.answer(open);
                }
                if !next.is_empty() {
                    *self = Seals::Asked {
                        since: Instant::now(),
                        peers: next,
                    };
                }
                Some(since)
            }
            other => {
                *self = other;
                None
            }
        }
    }
}
