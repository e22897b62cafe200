//! Walking a log: every hash, link, sequence number and checkpoint signature.

use crate::checkpoint::Checkpoint;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use vault_manifest::PublicKey;

use crate::entry::{Entry, GENESIS};
use crate::Result;

/// What [`verify`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Valid signed checkpoints.
    pub checkpoints: u64,
    /// Sequence number of the last valid checkpoint.
    pub last_checkpoint: u64,
    /// Entries after the last sealed entry (the server seals the last entry
    /// of every write, so these were never acknowledged: an interrupted
    /// write, or a forged tail).
    pub unsigned_tail: u64,
    /// Sequence number and hash of the last sealed entry.
    pub sealed_seq: u64,
    /// Hash of entry `sealed_seq`.
    pub sealed_hash: String,
    /// Bytes of the file up to and including the last sealed entry.
    #[serde(skip)]
    pub sealed_bytes: u64,
    /// The first entry that does not fit: (line number, sequence, reason).
    /// A checkpoint the log does not reach or contradicts is named here too.
    pub first_bad: Option<(u64, u64, String)>,
}

impl Report {
    /// True when nothing was found wrong and every entry is sealed.
    pub fn intact(&self) -> bool {
        self.first_bad.is_none() && self.unsigned_tail == 0
    }

    /// What is wrong, in one line (`None` when intact).
    pub fn problem(&self) -> Option<String> {
        if let Some((line, seq, why)) = &self.first_bad {
            return Some(format!("entry {seq} (line {line}): {why}"));
        }
        (self.unsigned_tail > 0).then(|| {
            format!(
                "{} entries after the last sealed entry ({}) carry no server signature: an interrupted write or a forged tail",
                self.unsigned_tail, self.sealed_seq
            )
        })
    }
}

/// Verify the log at `path` against the server key `key`.
pub fn verify(path: &Path, key: &PublicKey) -> Result<Report> {
    verify_with(path, key, &[])
}

/// Verify the log at `path` against the server key `key` and against
/// `checkpoints` kept elsewhere: the log must reach each one's size and
/// have its hash there (else it was cut, deleted or forked since).
pub fn verify_with(path: &Path, key: &PublicKey, checkpoints: &[Checkpoint]) -> Result<Report> {
    verify_lines(
        |visit| crate::chain::scan_file(path, visit),
        key,
        checkpoints,
    )
}

/// Verify the entries of `chain` as [`verify_with`] does a file, and
/// against the head the chain records apart from its entries.
pub fn verify_chain(
    chain: &dyn crate::Chain,
    key: &PublicKey,
    checkpoints: &[Checkpoint],
) -> Result<Report> {
    let mut all = checkpoints.to_vec();
    all.extend(chain.head()?);
    verify_lines(|visit| chain.scan(visit), key, &all)
}

/// Visits lines for [`verify_lines`].
type Scan<'a> = dyn FnMut(&[u8]) -> bool + Send + 'a;

fn verify_lines(
    scan: impl FnOnce(&mut Scan<'_>) -> Result<()>,
    key: &PublicKey,
    checkpoints: &[Checkpoint],
) -> Result<Report> {
    let mut r = Report::default();
    let mut prev = GENESIS.to_owned();
    let mut offset = 0u64;
    let mut lineno = 0u64;
    scan(&mut |raw: &[u8]| {
        offset += raw.len() as u64;
        lineno += 1;
        // Sequence numbers start at 1 and have no gaps: they equal line numbers.
        let expected_seq = lineno;
        let bad = |why: String, seq: u64| Some((lineno, seq, why));
        let e: Entry = match std::str::from_utf8(raw)
            .map_err(|e| e.to_string())
            .and_then(|l| serde_json::from_str(l.trim_end_matches('\n')).map_err(|e| e.to_string()))
        {
            Ok(e) => e,
            Err(err) => {
                r.first_bad = bad(format!("line does not parse: {err}"), expected_seq);
                return false;
            }
        };
        r.entries += 1;
        if e.seq != expected_seq {
            r.first_bad = bad(
                format!("sequence {} where {expected_seq} was expected (entries deleted, reordered or inserted)", e.seq),
                e.seq,
            );
            return false;
        }
        if e.prev != prev {
            r.first_bad = bad("does not link to the entry before it".into(), e.seq);
            return false;
        }
        if e.compute_hash() != e.hash {
            r.first_bad = bad(
                "content does not match its hash (entry edited)".into(),
                e.seq,
            );
            return false;
        }
        if e.kind != "checkpoint" && e.kind != "event" {
            r.first_bad = bad(format!("unknown entry kind `{}`", e.kind), e.seq);
            return false;
        }
        if e.kind == "checkpoint" || !e.sig.is_empty() {
            let sig = STANDARD.decode(&e.sig).unwrap_or_default();
            if e.keyid != key.keyid() || !key.verify_bytes(&e.checkpoint_message(), &sig) {
                r.first_bad = bad("seal does not verify with the server key".into(), e.seq);
                return false;
            }
            if e.kind == "checkpoint" {
                r.checkpoints += 1;
                r.last_checkpoint = e.seq;
            }
            r.unsigned_tail = 0;
            r.sealed_seq = e.seq;
            r.sealed_hash = e.hash.clone();
            r.sealed_bytes = offset;
        } else {
            r.unsigned_tail += 1;
        }
        if let Some(cp) = checkpoints.iter().find(|c| c.size == e.seq) {
            if cp.hash != e.hash {
                r.first_bad = bad(
                    format!("differs from the checkpoint for {} entries (the log was forked or rewritten)", cp.size),
                    e.seq,
                );
                return false;
            }
        }
        prev = e.hash.clone();
        true
    })?;
    if r.first_bad.is_none() {
        if let Some(cp) = checkpoints
            .iter()
            .filter(|c| c.size > r.entries)
            .max_by_key(|c| c.size)
        {
            r.first_bad = Some((
                r.entries + 1,
                r.entries + 1,
                format!(
                    "the log ends after {} entries but a checkpoint covers {} (entries were cut or the log deleted)",
                    r.entries, cp.size
                ),
            ));
        }
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
        // Every write ends sealed: nothing is left unsigned.
        assert_eq!((r.unsigned_tail, r.sealed_seq), (0, 14));
    }

    fn reopen(
        path: &Path,
        key: &SecretKey,
        anchor: Option<&Checkpoint>,
    ) -> crate::Result<(AuditLog, crate::Opened)> {
        AuditLog::open_anchored(
            path.to_path_buf(),
            SecretKey::from_bytes(&key.to_bytes()),
            4,
            anchor,
            None,
        )
    }

    #[test]
    fn a_checkpoint_kept_elsewhere_catches_cuts_deletion_and_forks() {
        let (_d, path, key) = setup(10);
        let r = verify(&path, &key.public()).unwrap();
        let kept = Checkpoint {
            size: r.sealed_seq,
            hash: r.sealed_hash.clone(),
        };
        assert_eq!(kept.size, 13);
        assert!(
            verify_with(&path, &key.public(), std::slice::from_ref(&kept))
                .unwrap()
                .intact()
        );
        let orig = lines(&path);

        // Cut back to an earlier checkpoint: a valid log on its own ...
        std::fs::write(&path, orig[..10].join("\n") + "\n").unwrap();
        assert!(verify(&path, &key.public()).unwrap().intact());
        // ... but not against the checkpoint, and the server refuses it.
        let r = verify_with(&path, &key.public(), std::slice::from_ref(&kept)).unwrap();
        assert!(
            r.problem()
                .unwrap()
                .contains("ends after 10 entries but a checkpoint covers 13"),
            "{r:?}"
        );
        let err = reopen(&path, &key, Some(&kept)).err().unwrap();
        assert!(err.to_string().contains("checkpoint covers 13"), "{err}");

        // Continued from there (a fork): the checkpoint names the entry.
        {
            let (log, _) = reopen(&path, &key, None).unwrap();
            for i in 0..3 {
                log.record(Event::new("mallory", "pull", &format!("x/y:{i}"), "allow"))
                    .unwrap();
            }
            log.checkpoint().unwrap();
        }
        let r = verify_with(&path, &key.public(), std::slice::from_ref(&kept)).unwrap();
        let (line, seq, why) = r.first_bad.clone().unwrap();
        assert_eq!((line, seq), (13, 13), "{why}");
        assert!(why.contains("forked or rewritten"), "{why}");

        // Deleted outright.
        std::fs::remove_file(&path).unwrap();
        let err = reopen(&path, &key, Some(&kept)).err().unwrap();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_forged_tail_is_named_and_never_sealed_by_a_restart() {
        let (_d, path, key) = setup(10);
        let mut ls = lines(&path);
        let last: Entry = serde_json::from_str(ls.last().unwrap()).unwrap();
        let mut forged = Entry {
            seq: last.seq + 1,
            time_ms: last.time_ms + 1,
            kind: "event".into(),
            event: Event::new("ghost", "pull", "hr/people:1", "allow"),
            prev: last.hash.clone(),
            hash: String::new(),
            sig: String::new(),
            keyid: String::new(),
        };
        forged.hash = forged.compute_hash();
        ls.push(serde_json::to_string(&forged).unwrap());
        std::fs::write(&path, ls.join("\n") + "\n").unwrap();
        let r = verify(&path, &key.public()).unwrap();
        assert!(!r.intact());
        assert!(r.problem().unwrap().contains("forged tail"), "{r:?}");
        // A restart removes the unsealed entry instead of signing over it.
        let (log, opened) = reopen(&path, &key, None).unwrap();
        assert_eq!(opened.cut_unsealed, 1);
        log.checkpoint().unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("ghost"));
        assert!(verify(&path, &key.public()).unwrap().intact());
    }

    #[test]
    fn every_checkpoint_is_handed_out_as_a_signed_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = SecretKey::generate().unwrap();
        let notes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = notes.clone();
        let (log, _) = AuditLog::open_anchored(
            path.clone(),
            SecretKey::from_bytes(&key.to_bytes()),
            2,
            None,
            Some(Box::new(move |n: &str| {
                sink.lock().unwrap().push(n.to_owned())
            })),
        )
        .unwrap();
        for i in 0..5 {
            log.record(Event::new("a", "pull", &format!("a/b:{i}"), "allow"))
                .unwrap();
        }
        log.checkpoint().unwrap();
        let notes = notes.lock().unwrap().clone();
        assert_eq!(notes.len(), 3);
        let last = Checkpoint::verify(notes.last().unwrap(), &key.public()).unwrap();
        assert_eq!(Some(notes.last().unwrap().clone()), log.latest_checkpoint());
        let r = verify_with(&path, &key.public(), std::slice::from_ref(&last)).unwrap();
        assert!(r.intact());
        assert_eq!(last.size, r.entries);
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
