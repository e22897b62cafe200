//! Walking a log: every hash, link, sequence number and checkpoint signature.

use std::io::{BufRead, BufReader};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use vault_manifest::PublicKey;

use crate::entry::{Entry, GENESIS};
use crate::{Error, Result};

/// What [`verify`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Valid signed checkpoints.
    pub checkpoints: u64,
    /// Sequence number of the last valid checkpoint.
    pub last_checkpoint: u64,
    /// Entries after the last checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
    /// The first entry that does not fit: (line number, sequence, reason).
    pub first_bad: Option<(u64, u64, String)>,
}

impl Report {
    /// True when nothing was found wrong.
    pub fn intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Verify the log at `path` against the server key `key`.
pub fn verify(path: &Path, key: &PublicKey) -> Result<Report> {
    let f = std::fs::File::open(path).map_err(|cause| Error::Io {
        path: path.display().to_string(),
        cause,
    })?;
    let mut r = Report::default();
    let mut prev = GENESIS.to_owned();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let lineno = i as u64 + 1;
        // Sequence numbers start at 1 and have no gaps: they equal line numbers.
        let expected_seq = lineno;
        let line = line.map_err(|cause| Error::Io {
            path: path.display().to_string(),
            cause,
        })?;
        let bad = |why: String, seq: u64| Some((lineno, seq, why));
        let e: Entry = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(err) => {
                r.first_bad = bad(format!("line does not parse: {err}"), expected_seq);
                break;
            }
        };
        r.entries += 1;
        if e.seq != expected_seq {
            r.first_bad = bad(
                format!("sequence {} where {expected_seq} was expected (entries deleted, reordered or inserted)", e.seq),
                e.seq,
            );
            break;
        }
        if e.prev != prev {
            r.first_bad = bad("does not link to the entry before it".into(), e.seq);
            break;
        }
        if e.compute_hash() != e.hash {
            r.first_bad = bad(
                "content does not match its hash (entry edited)".into(),
                e.seq,
            );
            break;
        }
        if e.kind == "checkpoint" {
            let sig = STANDARD.decode(&e.sig).unwrap_or_default();
            if e.keyid != key.keyid() || !key.verify_bytes(&e.checkpoint_message(), &sig) {
                r.first_bad = bad(
                    "checkpoint signature does not verify with the server key".into(),
                    e.seq,
                );
                break;
            }
            r.checkpoints += 1;
            r.last_checkpoint = e.seq;
            r.unsigned_tail = 0;
        } else if e.kind == "event" {
            r.unsigned_tail += 1;
        } else {
            r.first_bad = bad(format!("unknown entry kind `{}`", e.kind), e.seq);
            break;
        }
        prev = e.hash.clone();
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, Event};
    use vault_manifest::SecretKey;

    fn setup(n: u64) -> (tempfile::TempDir, std::path::PathBuf, SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SecretKey::generate().unwrap();
        let log = AuditLog::open(path.clone(), SecretKey::from_bytes(&key.to_bytes()), 4).unwrap();
        for i in 0..n {
            log.record(Event::new("alice", "pull", &format!("a/b:{i}"), "allow"))
                .unwrap();
        }
        log.checkpoint().unwrap();
        (dir, path, key)
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn intact_log_verifies_and_continues_after_reopen() {
        let (_d, path, key) = setup(10);
        let r = verify(&path, &key.public()).unwrap();
        assert!(r.intact(), "{r:?}");
        assert_eq!(r.entries, 13);
        assert_eq!(r.checkpoints, 3);
        assert_eq!(r.unsigned_tail, 0);
        let log = AuditLog::open(path.clone(), SecretKey::from_bytes(&key.to_bytes()), 4).unwrap();
        log.record(Event::new("bob", "push", "x/y", "allow"))
            .unwrap();
        let r = verify(&path, &key.public()).unwrap();
        assert!(r.intact(), "{r:?}");
        assert_eq!(r.unsigned_tail, 1);
    }

    #[test]
    fn edits_deletions_reorders_and_forged_checkpoints_are_found() {
        let (_d, path, key) = setup(10);
        let orig = lines(&path);
        let check = |ls: &[String], want_line: u64| {
            std::fs::write(&path, ls.join("\n") + "\n").unwrap();
            let r = verify(&path, &key.public()).unwrap();
            let (line, _, why) = r
                .first_bad
                .clone()
                .unwrap_or_else(|| panic!("not detected: {ls:?}"));
            assert_eq!(line, want_line, "{why}");
        };
        let mut edited = orig.clone();
        edited[2] = edited[2].replace("alice", "mallory");
        check(&edited, 3);
        let mut deleted = orig.clone();
        deleted.remove(3);
        check(&deleted, 4);
        let mut reordered = orig.clone();
        reordered.swap(1, 2);
        check(&reordered, 2);
        let other = SecretKey::generate().unwrap();
        let mut forged = orig.clone();
        let mut cp: Entry = serde_json::from_str(&forged[4]).unwrap();
        assert_eq!(cp.kind, "checkpoint");
        cp.sig = STANDARD.encode(other.sign_bytes(&cp.checkpoint_message()));
        forged[4] = serde_json::to_string(&cp).unwrap();
        check(&forged, 5);
    }
}
