//! # Design notes (documentation only)
//!
//! ## Threat model
//! The blob store (a local directory, an S3 bucket, its backups) is assumed
//! readable and writable by an attacker. Metadata (redb) holds only wrapped
//! keys. The master key lives unsealed only in the server's memory. An
//! attacker who can modify blobs must not learn plaintext, and every
//! modification — bit flips, truncation, reordering, splicing segments or
//! headers between blobs, swapping wrapped DEKs — must fail to decrypt.
//!
//! ## Key hierarchy
//! ```text
//! master key (32 B, sealed with age on disk)
//!   └─ KEK v1, v2, …   wrapped by the master key, AAD = "mlvault/v1 kek" ‖ ring id ‖ version
//!        └─ DEK per blob  wrapped by one KEK, AAD = "mlvault/v1 dek" ‖ ring id ‖ version ‖ context
//! ```
//! The encryption context (blob id, namespace, plaintext size and SHA-256)
//! binds a wrapped DEK to exactly one blob: a DEK copied onto another blob's
//! record fails to unwrap. Rotation adds a KEK version; rewrap re-seals DEKs
//! under the newest one without touching blob bytes; deleting a blob's wrapped
//! DEK (crypto-shredding) makes every copy of the blob unreadable.
//!
//! ## Blob format v1
//! A header (see [`crate::Header`]) holds a random 32-byte salt and 7-byte
//! nonce prefix drawn for every write, so no (key, nonce) pair repeats even if
//! a DEK were reused. The payload key is HKDF-SHA256 of the DEK with that salt
//! and `info = "mlvault/v1 payload" ‖ SHA-256(header body)`: changing any header
//! byte changes the key. A commitment tag, HMAC-SHA256 of the header body under
//! a second HKDF output, is checked in constant time before any segment is
//! opened: the header commits to the one DEK that made it (AES-GCM alone is not
//! key-committing).
//!
//! ## Blob format v2
//! The server writes v2. Its header has the v1 layout with version byte 2
//! and the digest field left zero, and its keys use the labels
//! `"mlvault/v2 payload"` and `"mlvault/v2 commit"`. The plaintext SHA-256 is
//! instead the associated data of the final segment. A writer can therefore
//! start encrypting before it knows the digest: a push uploads a file and
//! hashes it in the same pass, and the server seals the last segment once
//! its own hash of the received bytes is done. A reader binds the digest it
//! expects (from the blob's record, which the manifest names) with
//! [`crate::Header::expect_digest`]; read against any other digest, the
//! final segment fails to authenticate. Segments before the last open
//! without the digest, which is what a ranged read needs, and a whole-file
//! read never ends without the final segment. The DEK of a v2 blob is
//! wrapped, like v1's, under the full context, digest included, once the
//! digest is known. The version byte is inside the committed header body, so
//! a v1 header relabelled v2 (or the reverse) fails: v2 requires the zero
//! digest field, and a v2 header read as v1 carries a digest that matches no
//! expected one.
//!
//! ## Nonce scheme
//! Segment `i` is AES-256-GCM under the payload key with nonce
//! `prefix(7) ‖ BE32(i) ‖ last(1)`. The index stops reordering, dropping and
//! duplication; the last flag stops truncation at a segment boundary and
//! appending after the end. The header declares the plaintext size, so the
//! number of segments and each segment's offset are computable: a range read
//! decrypts from any segment without reading the ones before it.
//!
//! ## Limits
//! `ring` does not zeroize its expanded AES key schedules; our own key bytes
//! (`MasterKey`, `Kek`, `Dek`) are zeroized on drop. redb is copy-on-write and
//! does not zero freed pages, so a destroyed wrapped DEK could linger in the
//! metadata file; the server compacts the metadata after every delete, which
//! in our tests leaves no trace of it, but that is redb behaviour, not a
//! guarantee. Backups of the *metadata* taken before a delete still hold the
//! wrapped DEK: crypto-shredding protects blob-store copies, and metadata
//! backups must be aged out to complete a deletion.
