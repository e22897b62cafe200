//! The [`MetaStore`] conformance suite: the contract every metadata
//! backend keeps, written against the trait alone so that the next backend
//! (shared metadata for several replicas) runs it unchanged:
//!
//! ```ignore
//! vault_store::meta_conformance::run_all(&|| Arc::new(MyStore::connect(…)) as Arc<dyn MetaStore>);
//! ```
//!
//! Each check takes a fresh, empty store from the factory and panics,
//! naming the rule, when the store breaks it.

use std::collections::HashSet;
use std::sync::Arc;

use vault_api::{FileEntry, Kind};
use vault_crypto::{KeyringId, WrappedDek, WrappedKek};

use crate::records::*;
use crate::{Error, MetaStore};

/// Makes a fresh, empty store.
pub type Factory<'a> = &'a (dyn Fn() -> Arc<dyn MetaStore> + Sync);

/// Every check, in order.
pub fn run_all(fresh: Factory<'_>) {
    keyring_compare_and_set(fresh);
    tokens(fresh);
    version_numbers_are_reserved_and_never_reused(fresh);
    artifact_kind_and_label_are_fixed_at_first_push(fresh);
    commit_records_the_version_and_takes_references(fresh);
    a_committed_version_cannot_be_committed_again(fresh);
    abandon_returns_only_the_sessions_pending_blobs(fresh);
    sessions_expire_by_idle_time_up_to_the_deadline(fresh);
    shared_blobs_are_shredded_with_their_last_version(fresh);
    an_aliased_version_cannot_be_deleted(fresh);
    dedup_finds_only_live_blobs_of_the_same_kind_label_and_namespace(fresh);
    review_is_compare_and_set(fresh);
    a_rescan_replaces_only_the_verdict(fresh);
    attestors_and_immutable_attestations(fresh);
    dek_swap_is_compare_and_set(fresh);
    latest_and_listing(fresh);
    aliases_are_compare_and_set_under_concurrent_writers(fresh);
    a_deleted_alias_keeps_its_sequence(fresh);
    config_publishers_and_jobs(fresh);
    jobs_are_claimed_leased_and_committed_once(fresh);
    journaled_changes_commit_with_their_log_entries_or_not_at_all(fresh);
}

/// Makes two handles on one fresh, empty store: two replicas of a server
/// sharing one database (or the same handle twice, for a store only one
/// process opens).
pub type Pair<'a> = &'a (dyn Fn() -> (Arc<dyn MetaStore>, Arc<dyn MetaStore>) + Sync);

/// The checks that matter when several processes share the store: writes
/// through either handle are one history.
pub fn run_shared(pair: Pair<'_>) {
    replicas_moving_one_alias_give_one_winner_per_sequence(pair);
    replicas_pushing_one_artifact_get_distinct_versions(pair);
    what_one_replica_writes_the_other_reads(pair);
    replicas_claiming_one_job_get_one_owner_and_one_output(pair);
}

fn queued_job(id: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        state: "queued".into(),
        source: "t/d:1".into(),
        source_digest: "sha256:00".into(),
        target: "t/o".into(),
        spec: String::new(),
        spec_digest: String::new(),
        principal: "dpo".into(),
        created: 1,
        updated: 1,
        rows: 0,
        session: None,
        output: None,
        report: None,
        error: None,
        attempts: 0,
        review: None,
        owner: String::new(),
        lease_until: 0,
    }
}

/// A job's output session with one uploaded blob; the version to commit.
fn job_output(m: &dyn MetaStore, prefix: &str) -> (SessionRecord, VersionRecord) {
    let s = m
        .open_session(session(
            &format!("s-{prefix}"),
            "t/o",
            Kind::Dataset,
            1,
            None,
        ))
        .expect("open_session");
    let id = format!("{prefix}-0");
    m.attach_blob(&s.id, 0, &blob(&id, "t", &s.id, 0))
        .expect("attach_blob");
    let v = version_of(&s, &[id.as_str()]);
    (s, v)
}

fn replicas_claiming_one_job_get_one_owner_and_one_output(pair: Pair<'_>) {
    let (a, b) = pair();
    a.put_job(&queued_job("job_s")).unwrap();
    let owners = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (r, m) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            let owners = &owners;
            scope.spawn(move || {
                let me = format!("replica-{r}");
                if let Some(j) = m.claim_job("job_s", &me, 100, 200, false).unwrap() {
                    owners.lock().unwrap().push(j.owner);
                }
            });
        }
    });
    let owners = owners.into_inner().unwrap();
    assert_eq!(owners.len(), 1, "one claim wins: {owners:?}");
    let winner = owners[0].clone();
    // Both run it; only the holder's output is committed.
    let mut committed = 0;
    for (r, m) in [a.clone(), b.clone()].into_iter().enumerate() {
        for who in [winner.clone(), format!("not-{winner}")] {
            let mut job = m.job("job_s").unwrap().unwrap();
            if job.state == "queued" && job.owner == who {
                job.state = "running".into();
                assert!(m.put_owned_job(&job).unwrap());
            }
            let (_, v) = job_output(m.as_ref(), &format!("o{r}-{}", who.len()));
            job.owner = who;
            job.state = "succeeded".into();
            job.output = Some(format!("{}:{}", v.name, v.version));
            let s = format!("s-o{r}-{}", job.owner.len());
            committed += usize::from(m.commit_job(&s, &v, &job).unwrap());
        }
    }
    assert_eq!(committed, 1, "a job's output is committed once");
    assert_eq!(a.list("t/o").unwrap()[0].1.len(), 1);
    assert_eq!(b.job("job_s").unwrap().unwrap().state, "succeeded");
}

fn replicas_moving_one_alias_give_one_winner_per_sequence(pair: Pair<'_>) {
    let (a, b) = pair();
    const MOVES: u64 = 50;
    let winners = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (r, m) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            let winners = &winners;
            scope.spawn(move || loop {
                let cur = m.alias_sequence("t/m", "prod").unwrap();
                let next = cur.map_or(1, |c| c + 1);
                if next > MOVES {
                    break;
                }
                if m.put_alias(&alias_entry("t/m", "prod", r as u64 + 1, next), cur)
                    .unwrap()
                {
                    winners.lock().unwrap().push(next);
                }
            });
        }
    });
    let mut seqs = winners.into_inner().unwrap();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=MOVES).collect::<Vec<_>>(),
        "every sequence number has exactly one winner and none is skipped"
    );
    assert_eq!(b.alias("t/m", "prod").unwrap().unwrap().sequence, MOVES);
}

fn replicas_pushing_one_artifact_get_distinct_versions(pair: Pair<'_>) {
    let (a, b) = pair();
    const EACH: usize = 10;
    let versions = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (r, m) in [a.clone(), b.clone()].into_iter().enumerate() {
            let versions = &versions;
            scope.spawn(move || {
                for i in 0..EACH {
                    let s = push(m.as_ref(), "t/m", 1, &format!("r{r}-{i}"));
                    versions.lock().unwrap().push(s.version);
                }
            });
        }
    });
    let mut got = versions.into_inner().unwrap();
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=2 * EACH as u64).collect::<Vec<_>>(),
        "two replicas never hand out one version number twice"
    );
    assert_eq!(a.list("t/").unwrap()[0].1.len(), 2 * EACH);
}

fn what_one_replica_writes_the_other_reads(pair: Pair<'_>) {
    let (a, b) = pair();
    let tok = TokenRecord {
        id: "tok_1".into(),
        principal: "ci".into(),
        role: "trainer".into(),
        namespaces: vec!["t".into()],
        created: 1,
        expires: None,
        revoked: false,
        suspended: false,
        pending: false,
        created_by: String::new(),
        approved_by: String::new(),
    };
    a.put_token("h1", &tok).unwrap();
    assert!(!b.token_by_hash("h1").unwrap().unwrap().revoked);
    assert!(b.revoke_token("tok_1").unwrap());
    assert!(
        a.token_by_hash("h1").unwrap().unwrap().revoked,
        "a revocation through one replica is what the other reads next"
    );
    let s = push(a.as_ref(), "t/x", 2, "x");
    let v = b.version("t/x", s.version).unwrap().expect("the version");
    assert_eq!(
        b.version_by_digest(&v.digest).unwrap().unwrap().version,
        s.version
    );
    assert_eq!(b.delete_version("t/x", s.version).unwrap().len(), 2);
    assert!(a.version("t/x", s.version).unwrap().is_none());
}

fn dek(tag: u8) -> WrappedDek {
    WrappedDek {
        keyring: KeyringId::from_bytes([7; 16]),
        kek_version: 1,
        nonce: [tag; 12],
        ciphertext: vec![tag; 48],
    }
}

fn sha(tag: u8) -> String {
    hex::encode([tag; 32])
}

fn session(id: &str, name: &str, kind: Kind, files: usize, label: Option<&str>) -> SessionRecord {
    let now = crate::now();
    SessionRecord {
        id: id.into(),
        name: name.into(),
        kind,
        version: 0,
        files: (0..files)
            .map(|i| FileEntry {
                path: format!("f{i}.bin"),
                size: 10 + i as u64,
                sha256: sha(i as u8),
            })
            .collect(),
        blobs: vec![None; files],
        principal: "tester".into(),
        created: now,
        expires: now + 3600,
        sensitivity: label.map(str::to_owned),
        idle_secs: 0,
        deadline: now + 3600,
    }
}

/// `s` with every file declared without a digest (found while uploading).
fn unhashed(mut s: SessionRecord) -> SessionRecord {
    for f in &mut s.files {
        f.sha256.clear();
    }
    s
}

fn blob(id: &str, ns: &str, session: &str, tag: u8) -> BlobRecord {
    BlobRecord {
        id: id.into(),
        namespace: ns.into(),
        size: 10 + u64::from(tag),
        sha256: sha(tag),
        wrapped_dek: dek(tag),
        refs: 0,
        pending_session: Some(session.into()),
        created: crate::now(),
        sensitivity: String::new(),
        kind: String::new(),
        artifact: String::new(),
    }
}

fn version_of(s: &SessionRecord, blobs: &[&str]) -> VersionRecord {
    VersionRecord {
        name: s.name.clone(),
        version: s.version,
        kind: s.kind,
        digest: format!("sha256:{}", hex::encode([s.version as u8; 32]))
            + &s.name.len().to_string(),
        envelope: "{}".into(),
        files: s
            .files
            .iter()
            .zip(blobs)
            .map(|(f, b)| VersionFile {
                entry: f.clone(),
                blob: (*b).to_owned(),
            })
            .collect(),
        created: crate::now(),
        report: None,
        review: None,
        scan: None,
        pushed_by: String::new(),
    }
}

/// Open a session for `name`, upload `n` fresh blobs (ids `PREFIX-i`),
/// commit; returns the session as opened (with its version).
fn push(m: &dyn MetaStore, name: &str, n: usize, prefix: &str) -> SessionRecord {
    let s = m
        .open_session(session(&format!("s-{prefix}"), name, Kind::Model, n, None))
        .expect("open_session");
    let ns = name.split('/').next().unwrap_or_default();
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        m.attach_blob(&s.id, i, &blob(id, ns, &s.id, i as u8))
            .expect("attach_blob");
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    m.commit(&s.id, &version_of(&s, &refs)).expect("commit");
    s
}

fn keyring_compare_and_set(fresh: Factory<'_>) {
    let m = fresh();
    assert!(
        m.keyring().unwrap().is_none(),
        "a new store has no key ring"
    );
    let kek = |v: u32| WrappedKek {
        version: v,
        nonce: [v as u8; 12],
        ciphertext: vec![v as u8; 48],
    };
    let one = KeyringRecord {
        id: KeyringId::from_bytes([1; 16]),
        keks: vec![kek(1)],
        min_decryption_version: 1,
    };
    m.put_keyring(&one).unwrap();
    let mut two = one.clone();
    two.keks.push(kek(2));
    let mut other = one.clone();
    other.keks.push(kek(3));
    assert!(
        m.swap_keyring(&one, &two).unwrap(),
        "swap from the stored ring"
    );
    assert!(
        !m.swap_keyring(&one, &other).unwrap(),
        "swap_keyring must refuse a stale `old`"
    );
    assert_eq!(m.keyring().unwrap().unwrap().keks.len(), 2);
}

fn tokens(fresh: Factory<'_>) {
    let m = fresh();
    let tok = |id: &str| TokenRecord {
        id: id.into(),
        principal: "p".into(),
        role: "trainer".into(),
        created: 1,
        expires: None,
        revoked: false,
        namespaces: vec!["t".into()],
        suspended: false,
        pending: true,
        created_by: "admin".into(),
        approved_by: String::new(),
    };
    m.put_token("h1", &tok("tok_1")).unwrap();
    m.put_token("h2", &tok("tok_2")).unwrap();
    assert_eq!(m.token_by_hash("h1").unwrap().unwrap().id, "tok_1");
    assert!(m.token_by_hash("nope").unwrap().is_none());
    assert_eq!(m.list_tokens().unwrap().len(), 2);
    assert!(m.revoke_token("tok_1").unwrap());
    assert!(
        !m.revoke_token("tok_9").unwrap(),
        "revoking a missing token"
    );
    assert!(m.token_by_hash("h1").unwrap().unwrap().revoked);
    assert!(m.suspend_token("tok_2", true).unwrap());
    assert!(m.token_by_hash("h2").unwrap().unwrap().suspended);
    assert!(m.approve_token("tok_2", "bob").unwrap());
    let t = m.token_by_hash("h2").unwrap().unwrap();
    assert!(!t.pending && t.approved_by == "bob", "approve_token");
}

fn version_numbers_are_reserved_and_never_reused(fresh: Factory<'_>) {
    let m = fresh();
    let a = m
        .open_session(session("a", "t/m", Kind::Model, 1, None))
        .unwrap();
    let b = m
        .open_session(session("b", "t/m", Kind::Model, 1, None))
        .unwrap();
    assert_eq!(
        (a.version, b.version),
        (1, 2),
        "versions are reserved in order"
    );
    m.abandon_session(&a.id).unwrap();
    let c = m
        .open_session(session("c", "t/m", Kind::Model, 1, None))
        .unwrap();
    assert_eq!(
        c.version, 3,
        "an abandoned session's version is never handed out again"
    );
    let ids: HashSet<String> = m
        .list_sessions()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, HashSet::from(["b".to_owned(), "c".to_owned()]));
    assert!(m.session("a").unwrap().is_none());
}

fn artifact_kind_and_label_are_fixed_at_first_push(fresh: Factory<'_>) {
    let m = fresh();
    m.open_session(session("a", "t/d", Kind::Dataset, 1, Some("raw-pii")))
        .unwrap();
    let art = m.artifact("t/d").unwrap().unwrap();
    assert_eq!(
        (art.kind, art.sensitivity.as_str()),
        (Kind::Dataset, "raw-pii")
    );
    assert!(
        matches!(
            m.open_session(session("b", "t/d", Kind::Model, 1, None)),
            Err(Error::Conflict(_))
        ),
        "another kind under the same name is a conflict"
    );
    assert!(
        matches!(
            m.open_session(session("c", "t/d", Kind::Dataset, 1, Some("public"))),
            Err(Error::Conflict(_))
        ),
        "another label under the same name is a conflict"
    );
    assert_eq!(m.kind_of("t/d").unwrap(), Some(Kind::Dataset));
}

fn commit_records_the_version_and_takes_references(fresh: Factory<'_>) {
    let m = fresh();
    let s = push(m.as_ref(), "t/m", 2, "x");
    let v = m
        .version("t/m", s.version)
        .unwrap()
        .expect("committed version");
    assert_eq!(v.files.len(), 2);
    assert_eq!(
        m.version_by_digest(&v.digest).unwrap().map(|v| v.version),
        Some(s.version),
        "the digest index"
    );
    for id in ["x-0", "x-1"] {
        let b = m.blob(id).unwrap().expect("blob record");
        assert_eq!(b.refs, 1, "commit takes one reference per file");
        assert!(b.pending_session.is_none(), "commit ends the pending state");
        assert_eq!((b.kind.as_str(), b.artifact.as_str()), ("model", "t/m"));
    }
    assert!(
        m.session(&s.id).unwrap().is_none(),
        "commit drops the session"
    );
}

fn a_committed_version_cannot_be_committed_again(fresh: Factory<'_>) {
    let m = fresh();
    let s = push(m.as_ref(), "t/m", 1, "x");
    let again = m
        .open_session(session("s2", "t/m", Kind::Model, 1, None))
        .unwrap();
    m.attach_blob("s2", 0, &blob("y-0", "t", "s2", 0)).unwrap();
    let mut clash = version_of(&again, &["y-0"]);
    clash.version = s.version;
    assert!(
        m.commit("s2", &clash).is_err(),
        "committing an existing version number must fail"
    );
    assert!(
        m.session("s2").unwrap().is_some(),
        "a failed commit changes nothing (the session stays)"
    );
    assert_eq!(m.blob("x-0").unwrap().unwrap().refs, 1);
    assert!(
        m.commit("missing", &version_of(&again, &["y-0"])).is_err(),
        "commit of a missing session"
    );
}

fn abandon_returns_only_the_sessions_pending_blobs(fresh: Factory<'_>) {
    let m = fresh();
    push(m.as_ref(), "t/m", 1, "live");
    let s = m
        .open_session(unhashed(session("s", "t/m", Kind::Model, 2, None)))
        .unwrap();
    m.attach_blob("s", 0, &blob("p-0", "t", "s", 0)).unwrap();
    // File 1 reuses the committed blob (dedup): it is not the session's.
    assert!(m.reuse_blob("s", 1, &sha(0), "live-0").unwrap());
    let dropped: HashSet<String> = m
        .abandon_session(&s.id)
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(dropped, HashSet::from(["p-0".to_owned()]));
    assert!(m.blob("p-0").unwrap().is_none());
    assert_eq!(
        m.blob("live-0").unwrap().unwrap().refs,
        1,
        "a reused live blob stays"
    );
    // Replacing a file's pending blob hands back the old one.
    let t = m
        .open_session(session("t", "t/m", Kind::Model, 1, None))
        .unwrap();
    m.attach_blob(&t.id, 0, &blob("q-0", "t", "t", 0)).unwrap();
    let old = m.attach_blob(&t.id, 0, &blob("q-1", "t", "t", 0)).unwrap();
    assert_eq!(old.map(|b| b.id).as_deref(), Some("q-0"));
    m.detach_blob(&t.id, 0, "q-1").unwrap();
    assert!(
        m.blob("q-1").unwrap().is_none(),
        "detach forgets the pending blob"
    );
}

fn sessions_expire_by_idle_time_up_to_the_deadline(fresh: Factory<'_>) {
    let m = fresh();
    let mut s = session("s", "t/m", Kind::Model, 1, None);
    s.idle_secs = 100;
    s.expires = s.created + 100;
    s.deadline = s.created + 150;
    let s = m.open_session(s).unwrap();
    assert!(m.touch_session(&s.id, s.created + 30).unwrap());
    assert_eq!(m.session(&s.id).unwrap().unwrap().expires, s.created + 130);
    m.touch_session(&s.id, s.created + 90).unwrap();
    assert_eq!(
        m.session(&s.id).unwrap().unwrap().expires,
        s.created + 150,
        "activity never moves expiry past the deadline"
    );
    assert!(!m.touch_session("missing", 0).unwrap());
}

fn shared_blobs_are_shredded_with_their_last_version(fresh: Factory<'_>) {
    let m = fresh();
    let a = push(m.as_ref(), "t/m", 1, "x");
    m.open_session(unhashed(session("b", "t/m", Kind::Model, 1, None)))
        .unwrap();
    assert!(
        m.reuse_blob("b", 0, &sha(0), "x-0").unwrap(),
        "reuse_blob binds a file declared without a digest to a live blob"
    );
    assert!(
        !m.reuse_blob("b", 0, &sha(0), "x-0").unwrap(),
        "reuse_blob refuses a file whose digest is known"
    );
    let b = m.session("b").unwrap().expect("the session");
    m.commit("b", &version_of(&b, &["x-0"])).unwrap();
    assert_eq!(m.blob("x-0").unwrap().unwrap().refs, 2);
    assert!(
        m.delete_version("t/m", a.version).unwrap().is_empty(),
        "a blob another version uses is not shredded"
    );
    assert_eq!(m.blob("x-0").unwrap().unwrap().refs, 1);
    let shredded: Vec<String> = m
        .delete_version("t/m", b.version)
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(shredded, ["x-0"], "the last version's blobs are shredded");
    assert!(m.blob("x-0").unwrap().is_none(), "the wrapped DEK is gone");
    assert!(m
        .find_blob("t", "model", "", &sha(0), 10)
        .unwrap()
        .is_none());
    assert!(matches!(
        m.delete_version("t/m", b.version),
        Err(Error::NotFound(_))
    ));
}

fn alias_entry(name: &str, alias: &str, version: u64, sequence: u64) -> AliasEntry {
    AliasEntry {
        name: name.into(),
        alias: alias.into(),
        version,
        sequence,
        expires: crate::now() + 60,
        signed: format!("record {sequence}"),
    }
}

fn an_aliased_version_cannot_be_deleted(fresh: Factory<'_>) {
    let m = fresh();
    let s = push(m.as_ref(), "t/m", 1, "x");
    assert!(m
        .put_alias(&alias_entry("t/m", "prod", s.version, 1), None)
        .unwrap());
    assert!(
        matches!(m.delete_version("t/m", s.version), Err(Error::Conflict(_))),
        "a version an alias names is not deleted"
    );
    assert!(m.version("t/m", s.version).unwrap().is_some());
    m.delete_alias("t/m", "prod").unwrap();
    assert_eq!(m.delete_version("t/m", s.version).unwrap().len(), 1);
}

fn dedup_finds_only_live_blobs_of_the_same_kind_label_and_namespace(fresh: Factory<'_>) {
    let m = fresh();
    push(m.as_ref(), "t/m", 1, "x");
    assert_eq!(
        m.find_blob("t", "model", "", &sha(0), 10)
            .unwrap()
            .map(|b| b.id)
            .as_deref(),
        Some("x-0")
    );
    for (ns, kind, label, size) in [
        ("u", "model", "", 10),
        ("t", "dataset", "", 10),
        ("t", "model", "raw-pii", 10),
        ("t", "model", "", 11),
    ] {
        assert!(
            m.find_blob(ns, kind, label, &sha(0), size)
                .unwrap()
                .is_none(),
            "find_blob must not cross namespace, kind, label or size: {ns} {kind} {label:?} {size}"
        );
    }
    // A pending blob is not offered.
    m.open_session(session("p", "t/n", Kind::Model, 1, None))
        .unwrap();
    m.attach_blob("p", 0, &blob("p-0", "t", "p", 9)).unwrap();
    assert!(m
        .find_blob("t", "model", "", &sha(9), 19)
        .unwrap()
        .is_none());
}

fn review_is_compare_and_set(fresh: Factory<'_>) {
    let m = fresh();
    let review = |state| Review {
        state,
        by: "dpo".into(),
        at: 1,
        reason: String::new(),
    };
    // A version with no review (an ordinary push) never gets one.
    let plain = push(m.as_ref(), "t/m", 1, "x");
    assert!(
        !m.set_review(
            "t/m",
            plain.version,
            &[ReviewState::Pending],
            &review(ReviewState::Approved)
        )
        .unwrap(),
        "a version without a review is not put under one"
    );
    // A job output is committed pending.
    let s = m
        .open_session(session("j", "t/m", Kind::Model, 1, None))
        .unwrap();
    m.attach_blob("j", 0, &blob("j-0", "t", "j", 0)).unwrap();
    let mut v = version_of(&s, &["j-0"]);
    v.review = Some(review(ReviewState::Pending));
    m.commit("j", &v).unwrap();
    assert!(!m.version("t/m", s.version).unwrap().unwrap().released());
    assert!(m
        .set_review(
            "t/m",
            s.version,
            &[ReviewState::Pending],
            &review(ReviewState::Approved)
        )
        .unwrap());
    assert!(
        !m.set_review(
            "t/m",
            s.version,
            &[ReviewState::Pending],
            &review(ReviewState::Rejected)
        )
        .unwrap(),
        "set_review must refuse a state it was not asked to move from"
    );
    let now = m.version("t/m", s.version).unwrap().unwrap();
    assert_eq!(
        now.review.as_ref().map(|r| r.state),
        Some(ReviewState::Approved)
    );
    assert!(now.released());
    assert!(matches!(
        m.set_review(
            "t/m",
            99,
            &[ReviewState::Pending],
            &review(ReviewState::Approved)
        ),
        Err(Error::NotFound(_))
    ));
}

fn dek_swap_is_compare_and_set(fresh: Factory<'_>) {
    let m = fresh();
    push(m.as_ref(), "t/m", 1, "x");
    let old = m.blob("x-0").unwrap().unwrap().wrapped_dek;
    assert!(m.swap_dek("x-0", &old, &dek(0x55)).unwrap());
    assert!(
        !m.swap_dek("x-0", &old, &dek(0x66)).unwrap(),
        "swap_dek must refuse a stale `old`"
    );
    assert_eq!(m.blob("x-0").unwrap().unwrap().wrapped_dek, dek(0x55));
}

fn latest_and_listing(fresh: Factory<'_>) {
    let m = fresh();
    push(m.as_ref(), "t/a", 1, "a1");
    let s2 = push(m.as_ref(), "t/a", 1, "a2");
    push(m.as_ref(), "u/b", 1, "b1");
    assert_eq!(
        m.latest_version("t/a").unwrap().unwrap().version,
        s2.version
    );
    assert!(m.latest_version("t/none").unwrap().is_none());
    let t: Vec<(String, usize)> = m
        .list("t/")
        .unwrap()
        .into_iter()
        .map(|(a, v)| (a.name, v.len()))
        .collect();
    assert_eq!(t, [("t/a".to_owned(), 2)]);
    assert_eq!(m.list("").unwrap().len(), 2);
}

fn aliases_are_compare_and_set_under_concurrent_writers(fresh: Factory<'_>) {
    let m = fresh();
    const WRITERS: u64 = 8;
    const EACH: u64 = 25;
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let m = m.clone();
            scope.spawn(move || {
                let mut won = 0;
                while won < EACH {
                    let cur = m.alias_sequence("t/m", "prod").unwrap();
                    let next = cur.map_or(1, |c| c + 1);
                    if m.put_alias(&alias_entry("t/m", "prod", w + 1, next), cur)
                        .unwrap()
                    {
                        won += 1;
                    }
                }
            });
        }
    });
    assert_eq!(
        m.alias("t/m", "prod").unwrap().unwrap().sequence,
        WRITERS * EACH,
        "every successful put_alias moved the sequence by exactly one: no lost or doubled update"
    );
    assert!(
        !m.put_alias(&alias_entry("t/m", "prod", 1, 5), Some(4))
            .unwrap(),
        "a stale expected sequence loses"
    );
    assert!(
        !m.put_alias(&alias_entry("t/m", "new", 1, 1), Some(3))
            .unwrap(),
        "an alias that never existed expects None"
    );
    assert_eq!(m.aliases("t/m").unwrap().len(), 1);
}

fn a_deleted_alias_keeps_its_sequence(fresh: Factory<'_>) {
    let m = fresh();
    assert!(m
        .put_alias(&alias_entry("t/m", "prod", 1, 1), None)
        .unwrap());
    assert!(m
        .put_alias(&alias_entry("t/m", "prod", 2, 2), Some(1))
        .unwrap());
    let gone = m
        .delete_alias("t/m", "prod")
        .unwrap()
        .expect("the deleted entry");
    assert_eq!(gone.version, 2);
    assert!(m.alias("t/m", "prod").unwrap().is_none());
    assert!(m.aliases("t/m").unwrap().is_empty());
    let seq = m
        .alias_sequence("t/m", "prod")
        .unwrap()
        .expect("the sequence stays");
    assert!(seq >= 2);
    assert!(
        !m.put_alias(&alias_entry("t/m", "prod", 1, 1), None)
            .unwrap(),
        "a deleted alias does not start again at 1"
    );
    assert!(m
        .put_alias(&alias_entry("t/m", "prod", 1, seq + 1), Some(seq))
        .unwrap());
    assert!(m.delete_alias("t/m", "none").unwrap().is_none());
}

fn config_publishers_and_jobs(fresh: Factory<'_>) {
    let m = fresh();
    assert!(m.config("k").unwrap().is_none());
    m.put_config("k", b"v1").unwrap();
    m.put_config("k", b"v2").unwrap();
    assert_eq!(m.config("k").unwrap().as_deref(), Some(&b"v2"[..]));
    let publ = |ns: &str, id: &str| PublisherRecord {
        namespace: ns.into(),
        keyid: id.into(),
        public_key: "pk".into(),
        added: 1,
        added_by: "admin".into(),
    };
    m.put_publisher(&publ("t", "k1")).unwrap();
    m.put_publisher(&publ("t", "k1")).unwrap();
    m.put_publisher(&publ("u", "k2")).unwrap();
    assert_eq!(m.publishers("t").unwrap().len(), 1, "same key id replaces");
    assert_eq!(m.publishers("").unwrap().len(), 2);
    assert!(m.remove_publisher("t", "k1").unwrap());
    assert!(!m.remove_publisher("t", "k1").unwrap());
    let job = queued_job("job_1");
    m.put_job(&job).unwrap();
    let mut done = job.clone();
    done.state = "succeeded".into();
    m.put_job(&done).unwrap();
    assert_eq!(m.job("job_1").unwrap().unwrap().state, "succeeded");
    assert_eq!(m.list_jobs().unwrap().len(), 1);
    assert!(m.job("job_2").unwrap().is_none());
}

fn jobs_are_claimed_leased_and_committed_once(fresh: Factory<'_>) {
    let m = fresh();
    assert!(m
        .claim_job("job_none", "a", 100, 130, false)
        .unwrap()
        .is_none());
    m.put_job(&queued_job("job_1")).unwrap();
    let j = m.claim_job("job_1", "a", 100, 130, false).unwrap().unwrap();
    assert_eq!((j.owner.as_str(), j.lease_until), ("a", 130));
    assert!(
        m.claim_job("job_1", "b", 110, 140, false)
            .unwrap()
            .is_none(),
        "held by another until its lease runs out"
    );
    let j = m.claim_job("job_1", "a", 110, 140, false).unwrap().unwrap();
    assert_eq!(j.lease_until, 140, "its holder renews");
    let j = m.claim_job("job_1", "b", 141, 170, false).unwrap().unwrap();
    assert_eq!(j.owner, "b", "taken over once the lease ran out");

    // The server that lost it can change nothing more.
    let mut stale = j.clone();
    stale.owner = "a".into();
    stale.state = "running".into();
    assert!(!m.put_owned_job(&stale).unwrap());
    let mut running = j.clone();
    running.state = "running".into();
    assert!(m.put_owned_job(&running).unwrap());

    let (sa, va) = job_output(m.as_ref(), "job-a");
    let mut done = running.clone();
    done.owner = "a".into();
    done.state = "succeeded".into();
    assert!(!m.commit_job(&sa.id, &va, &done).unwrap(), "a lost the job");
    assert!(m.version("t/o", va.version).unwrap().is_none());
    assert!(m.session(&sa.id).unwrap().is_some(), "nothing changed");

    let (sb, vb) = job_output(m.as_ref(), "job-b");
    done.owner = "b".into();
    done.output = Some(format!("t/o:{}", vb.version));
    assert!(m.commit_job(&sb.id, &vb, &done).unwrap());
    assert!(m.version("t/o", vb.version).unwrap().is_some());
    assert_eq!(m.job("job_1").unwrap().unwrap().state, "succeeded");
    assert!(
        !m.commit_job(&sb.id, &vb, &done).unwrap(),
        "a finished job commits nothing more"
    );
    assert!(m.claim_job("job_1", "b", 200, 230, true).unwrap().is_none());

    // One server alone on its store takes its own jobs back at once.
    m.put_job(&queued_job("job_2")).unwrap();
    m.claim_job("job_2", "old", 100, 1000, false)
        .unwrap()
        .unwrap();
    assert!(m
        .claim_job("job_2", "new", 101, 131, false)
        .unwrap()
        .is_none());
    let j = m
        .claim_job("job_2", "new", 101, 131, true)
        .unwrap()
        .unwrap();
    assert_eq!(j.owner, "new");
}

/// A journaled change and its log entries are one transaction: several
/// calls inside it are made together or not at all, a journal that fails
/// undoes the change, and a store that keeps the log hands each journal
/// the head the last one left.
fn journaled_changes_commit_with_their_log_entries_or_not_at_all(fresh: Factory<'_>) {
    use crate::LogRow;
    let m = fresh();
    let mut heads = Vec::new();
    let row = |seq: u64, n: u64| LogRow {
        seq: seq + n,
        hash: format!("h{}", seq + n),
        line: format!("entry {}", seq + n),
    };
    for round in 0..2u64 {
        m.journaled(
            &mut |s: &dyn MetaStore| {
                s.put_config(&format!("a{round}"), b"1")?;
                s.put_publisher(&PublisherRecord {
                    namespace: "t".into(),
                    keyid: format!("k{round}"),
                    public_key: "pk".into(),
                    added: 1,
                    added_by: "admin".into(),
                })
            },
            &mut |head| {
                heads.push(head.map(|(s, h)| (s, h.to_owned())));
                Ok(match head {
                    Some((seq, _)) => vec![row(seq, 1), row(seq, 2)],
                    None => Vec::new(),
                })
            },
        )
        .expect("a journaled change");
    }
    assert!(m.config("a0").unwrap().is_some() && m.config("a1").unwrap().is_some());
    assert_eq!(m.publishers("t").unwrap().len(), 2);
    match heads.as_slice() {
        [None, None] => {}
        [Some(first), Some(second)] => assert_eq!(
            second,
            &(first.0 + 2, format!("h{}", first.0 + 2)),
            "the second journal builds on the entries of the first"
        ),
        other => panic!("a store gives every journal its log's head, or none: {other:?}"),
    }

    // A journal that fails undoes the change.
    let err = m
        .journaled(
            &mut |s: &dyn MetaStore| s.put_config("undone", b"1"),
            &mut |_| Err(Error::Meta("the audit log cannot be written".into())),
        )
        .expect_err("a failing journal fails the change");
    assert!(err.to_string().contains("audit log"), "{err}");
    assert!(
        m.config("undone").unwrap().is_none(),
        "a change whose journal failed is not made"
    );

    // A change that fails half-way leaves nothing, and appends nothing.
    let mut journal_ran = false;
    let err = m
        .journaled(
            &mut |s: &dyn MetaStore| {
                s.put_config("half", b"1")?;
                Err(Error::Conflict("the second step failed".into()))
            },
            &mut |_| {
                journal_ran = true;
                Ok(Vec::new())
            },
        )
        .expect_err("a failing change fails");
    assert!(err.to_string().contains("second step"), "{err}");
    assert!(m.config("half").unwrap().is_none(), "nothing of it is made");
    assert!(!journal_ran, "no entry is made for a change that failed");
}

/// A rescan replaces a version's verdict and nothing else; a missing
/// version is not created.
fn a_rescan_replaces_only_the_verdict(fresh: Factory<'_>) {
    let m = fresh();
    push(m.as_ref(), "t/m", 1, "x");
    let before = m.version("t/m", 1).unwrap().expect("the pushed version");
    let scan = ScanRecord {
        verdict: "pass".into(),
        scanner: "vault-scan/9".into(),
        allowlist: "sha256:00".into(),
        envelope: "{}".into(),
    };
    assert!(m.set_scan("t/m", 1, &scan).unwrap());
    let after = m.version("t/m", 1).unwrap().unwrap();
    assert_eq!(after.scan.as_ref(), Some(&scan));
    let text =
        |r: VersionRecord| serde_json::to_string(&VersionRecord { scan: None, ..r }).unwrap();
    assert_eq!(text(after), text(before), "nothing but the verdict changes");
    assert!(!m.set_scan("t/m", 2, &scan).unwrap());
    assert!(m.version("t/m", 2).unwrap().is_none());
}

/// Attestors are replaced by name; an attestation is kept once, as it
/// was, and only about a version that exists.
fn attestors_and_immutable_attestations(fresh: Factory<'_>) {
    let m = fresh();
    let attestor = |types: &[&str]| AttestorRecord {
        name: "eval".into(),
        keyid: "ed25519:00".into(),
        public_key: "pk".into(),
        predicate_types: types.iter().map(|t| (*t).to_owned()).collect(),
        namespaces: vec!["t".into()],
        added: 1,
        added_by: "admin".into(),
    };
    m.put_attestor(&attestor(&["a"])).unwrap();
    m.put_attestor(&attestor(&["a", "b"])).unwrap();
    assert_eq!(m.attestors().unwrap(), vec![attestor(&["a", "b"])]);
    push(m.as_ref(), "t/m", 1, "x");
    let att = |digest: &str, envelope: &str| AttestationRecord {
        name: "t/m".into(),
        version: 1,
        digest: digest.into(),
        envelope: envelope.into(),
        predicate_type: "a".into(),
        attestor: "eval".into(),
        result: Some("PASSED".into()),
        added: 2,
        added_by: "ci".into(),
    };
    assert!(m.add_attestation(&att("sha256:01", "first")).unwrap());
    assert!(
        !m.add_attestation(&att("sha256:01", "rewritten")).unwrap(),
        "an attestation is never replaced"
    );
    assert!(m.add_attestation(&att("sha256:02", "second")).unwrap());
    let kept = m.attestations("t/m", 1).unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].envelope, "first");
    assert!(m.attestations("t/m", 2).unwrap().is_empty());
    let mut other = att("sha256:03", "x");
    other.version = 9;
    assert!(matches!(m.add_attestation(&other), Err(Error::NotFound(_))));
    assert!(m.remove_attestor("eval").unwrap());
    assert!(!m.remove_attestor("eval").unwrap());
}
