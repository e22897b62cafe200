//! The metadata trait. Every method is one atomic transaction: it happens
//! whole or not at all, and is durable when it returns.

use vault_api::Kind;
use vault_crypto::WrappedDek;

use crate::kv::Journal;
use crate::records::*;
use crate::Result;

/// Metadata of a vault: key ring, tokens, artifacts, versions, blobs and
/// upload sessions. [`crate::RedbMeta`] is the embedded adapter; a shared
/// database adapter for several replicas implements the same trait and runs
/// the same conformance tests.
pub trait MetaStore: Send + Sync {
    /// Make `change` (calls on the store it is given) and append what
    /// `journal` makes to the log in **one** transaction: the change is
    /// never made without its entries, nor its entries kept without it.
    /// A store that keeps the log (the audit chain replicas share) gives
    /// `journal` its head, locked from the start of the transaction, and
    /// appends the rows it returns; one that keeps none gives `None`, and
    /// `journal` appends to the caller's own log before the store commits.
    /// Either closure failing changes nothing; both may run again when the
    /// store retries the transaction.
    fn journaled(
        &self,
        change: &mut (dyn FnMut(&dyn MetaStore) -> Result<()> + Send),
        journal: &mut Journal<'_>,
    ) -> Result<()>;

    /// The stored key ring, if the vault is initialized.
    fn keyring(&self) -> Result<Option<KeyringRecord>>;
    /// Replace the stored key ring (init).
    fn put_keyring(&self, rec: &KeyringRecord) -> Result<()>;
    /// Replace the stored key ring if it still equals `old` (rotate,
    /// retire): false, changing nothing, when another writer changed it
    /// first, so no KEK version is ever written twice.
    fn swap_keyring(&self, old: &KeyringRecord, new: &KeyringRecord) -> Result<bool>;

    /// Store a token under the hash of its secret.
    fn put_token(&self, hash: &str, rec: &TokenRecord) -> Result<()>;
    /// Look a token up by the hash of its secret.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// All tokens.
    fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Revoke by public id; false if no such token.
    fn revoke_token(&self, id: &str) -> Result<bool>;
    /// Suspend or lift a suspension, by public id; false if no such token.
    fn suspend_token(&self, id: &str, suspended: bool) -> Result<bool>;
    /// Record `by`'s approval of a pending token; false if no such token.
    fn approve_token(&self, id: &str, by: &str) -> Result<bool>;

    /// Open an upload session: creates the artifact record on first push
    /// (or checks that `kind` matches) and reserves the next version number,
    /// which is never handed out again.
    fn open_session(&self, session: SessionRecord) -> Result<SessionRecord>;
    /// A session by id.
    fn session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// All open sessions.
    fn list_sessions(&self) -> Result<Vec<SessionRecord>>;
    /// Record a pending blob for file `index` of a session. Returns the blob
    /// the file had before, now detached (the caller deletes its object).
    fn attach_blob(
        &self,
        session: &str,
        index: usize,
        blob: &BlobRecord,
    ) -> Result<Option<BlobRecord>>;
    /// Record activity on a live session (see [`SessionRecord::touch`]);
    /// false if it is gone.
    fn touch_session(&self, id: &str, now: u64) -> Result<bool>;
    /// Detach and forget a pending blob after a failed upload.
    fn detach_blob(&self, session: &str, index: usize, blob_id: &str) -> Result<()>;
    /// Bind the pending blob of a file whose digest was found while it was
    /// written (not declared at open): record `sha256` as the file's and the
    /// blob's digest, with the DEK `wrapped` for that context. With `reuse`
    /// (a live blob of the namespace holding the same content), the file
    /// points at that blob instead and this one's record is dropped (the
    /// caller deletes its object). False, changing nothing, if the session
    /// no longer holds `blob_id` for file `index`.
    fn bind_blob(
        &self,
        session: &str,
        index: usize,
        blob_id: &str,
        sha256: &str,
        wrapped: &WrappedDek,
        reuse: Option<&str>,
    ) -> Result<bool>;
    /// Point file `index` of a session, declared without a digest, at the
    /// live blob `reuse` holding content `sha256`, found before its upload
    /// ended. The pending blob of the upload still in flight loses its
    /// record (its writer deletes the object it leaves). False, changing
    /// nothing, if the file's digest is already known.
    fn reuse_blob(&self, session: &str, index: usize, sha256: &str, reuse: &str) -> Result<bool>;
    /// Commit: insert the version, index its digest, take a reference on
    /// every blob and drop the session. Fails if the version exists.
    fn commit(&self, session: &str, version: &VersionRecord) -> Result<()>;
    /// Drop a session and its pending blob records; returns them so their
    /// objects can be deleted.
    fn abandon_session(&self, id: &str) -> Result<Vec<BlobRecord>>;

    /// An artifact.
    fn artifact(&self, name: &str) -> Result<Option<ArtifactRecord>>;
    /// A version.
    fn version(&self, name: &str, version: u64) -> Result<Option<VersionRecord>>;
    /// The highest live version of an artifact.
    fn latest_version(&self, name: &str) -> Result<Option<VersionRecord>>;
    /// A version by manifest digest.
    fn version_by_digest(&self, digest: &str) -> Result<Option<VersionRecord>>;
    /// Set the release review of a version if its current state is one of
    /// `from` (compare-and-set); false, changing nothing, otherwise. Errors
    /// if the version does not exist.
    fn set_review(
        &self,
        name: &str,
        version: u64,
        from: &[ReviewState],
        review: &Review,
    ) -> Result<bool>;
    /// Replace a version's admission scan verdict (a rescan); false if the
    /// version does not exist.
    fn set_scan(&self, name: &str, version: u64, scan: &ScanRecord) -> Result<bool>;
    /// Artifacts whose name starts with `prefix`, each with its live versions.
    fn list(&self, prefix: &str) -> Result<Vec<(ArtifactRecord, Vec<VersionRecord>)>>;
    /// Delete a version: remove it and its digest, drop its blob references
    /// and delete the records (wrapped DEKs) of blobs no version uses any
    /// more. Returns those blobs so their objects can be deleted.
    fn delete_version(&self, name: &str, version: u64) -> Result<Vec<BlobRecord>>;

    /// A blob record.
    fn blob(&self, id: &str) -> Result<Option<BlobRecord>>;
    /// Every blob record.
    fn list_blobs(&self) -> Result<Vec<BlobRecord>>;
    /// Replace a blob's wrapped DEK if it still equals `old` (rewrap).
    fn swap_dek(&self, id: &str, old: &WrappedDek, new: &WrappedDek) -> Result<bool>;
    /// A live blob of `namespace`, first committed as `kind` under
    /// sensitivity `label` (empty: none), holding exactly this content, for
    /// dedup.
    fn find_blob(
        &self,
        namespace: &str,
        kind: &str,
        label: &str,
        sha256: &str,
        size: u64,
    ) -> Result<Option<BlobRecord>>;

    /// A small configuration value (server key, …).
    fn config(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Store a configuration value.
    fn put_config(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Register a publisher key (replaces the same key id).
    fn put_publisher(&self, rec: &PublisherRecord) -> Result<()>;
    /// Publisher keys of a namespace (every namespace for `""`).
    fn publishers(&self, namespace: &str) -> Result<Vec<PublisherRecord>>;
    /// Remove a publisher key; false if it was not registered.
    fn remove_publisher(&self, namespace: &str, keyid: &str) -> Result<bool>;

    /// Register (or replace, by name) an attestor.
    fn put_attestor(&self, rec: &AttestorRecord) -> Result<()>;
    /// Every attestor.
    fn attestors(&self) -> Result<Vec<AttestorRecord>>;
    /// Remove an attestor; false if there was none by that name.
    fn remove_attestor(&self, name: &str) -> Result<bool>;
    /// Keep a verified attestation about a version, immutably: false,
    /// changing nothing, when the same envelope is already kept; an error
    /// when the version does not exist.
    fn add_attestation(&self, rec: &AttestationRecord) -> Result<bool>;
    /// The attestations about a version, by envelope digest.
    fn attestations(&self, name: &str, version: u64) -> Result<Vec<AttestationRecord>>;

    /// The current record of an alias.
    fn alias(&self, name: &str, alias: &str) -> Result<Option<AliasEntry>>;
    /// Every alias of an artifact.
    fn aliases(&self, name: &str) -> Result<Vec<AliasEntry>>;
    /// Store `entry` if the alias's last sequence (a deleted alias keeps
    /// its) is `expected` (`None`: the alias never existed). Returns false
    /// if another writer won.
    fn put_alias(&self, entry: &AliasEntry, expected: Option<u64>) -> Result<bool>;
    /// The last sequence an alias had, deleted or not: a new record must
    /// come after it, so clients that saw the old one never take a new
    /// record as a rollback.
    fn alias_sequence(&self, name: &str, alias: &str) -> Result<Option<u64>>;
    /// Delete an alias, keeping its sequence; the entry it had, or `None`
    /// if there was none.
    fn delete_alias(&self, name: &str, alias: &str) -> Result<Option<AliasEntry>>;

    /// Store (insert or replace) a job.
    fn put_job(&self, job: &JobRecord) -> Result<()>;
    /// A job.
    fn job(&self, id: &str) -> Result<Option<JobRecord>>;
    /// Every job.
    fn list_jobs(&self) -> Result<Vec<JobRecord>>;
    /// Claim unfinished job `id` for `owner` until `until` (Unix seconds):
    /// granted when nobody holds it, `owner` already does, its holder's
    /// claim ran out before `now`, or `force` (one server alone on its
    /// store, restarting). The job as claimed, or `None`: it is finished,
    /// gone, or another server holds it.
    fn claim_job(
        &self,
        id: &str,
        owner: &str,
        now: u64,
        until: u64,
        force: bool,
    ) -> Result<Option<JobRecord>>;
    /// Store `job` if its `owner` still holds it (else false: another
    /// server took it over, and this one must stop).
    fn put_owned_job(&self, job: &JobRecord) -> Result<bool>;
    /// Commit a job's output version as [`MetaStore::commit`] does and
    /// store the finished `job`, in one transaction, only if `job.owner`
    /// still holds the job and it is running: a job commits its output
    /// once, however many servers ran it. False when it did not hold it
    /// (nothing is changed).
    fn commit_job(&self, session: &str, version: &VersionRecord, job: &JobRecord) -> Result<bool>;

    /// Compact storage after deletions so freed records (destroyed wrapped
    /// DEKs) do not linger where the engine allows it. Default: nothing.
    fn reclaim(&self) -> Result<()> {
        Ok(())
    }

    /// Kind check helper for callers.
    fn kind_of(&self, name: &str) -> Result<Option<Kind>> {
        Ok(self.artifact(name)?.map(|a| a.kind))
    }
}
