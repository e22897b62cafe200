//! One conformance suite for the encrypted blob layer, run against every
//! backend reachable here: in-memory, the local file system, and a real S3
//! server (Garage) when `MLVAULT_S3_ENDPOINT` and its credentials are set
//! (`.ci/run` starts one; with `MLVAULT_REQUIRE_S3=1` its absence fails).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use vault_crypto::{BlobEncryptor, Dek, EncryptionContext, Keyring, MasterKey};
use vault_store::{BlobRecord, BlobStore, Error, LocalReads};

const SEG: u32 = 4096;

struct Fixture {
    ring: Keyring,
    store: BlobStore,
    raw: Arc<dyn ObjectStore>,
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(17).wrapping_add(seed))
        .collect()
}

fn new_id() -> [u8; 16] {
    vault_crypto::random_bytes().unwrap()
}

impl Fixture {
    fn new(raw: Arc<dyn ObjectStore>, store: BlobStore) -> Self {
        let master = MasterKey::generate().unwrap();
        let (ring, _) = Keyring::create(&master).unwrap();
        Self { ring, store, raw }
    }

    /// Write `body` (split into `chunk`-byte pieces) declared as `declared`,
    /// in format v2 with the digest declared up front (a push whose client
    /// hashed first).
    async fn write(
        &self,
        declared: &[u8],
        body: &[u8],
        chunk: usize,
    ) -> (BlobRecord, Result<[u8; 32], Error>) {
        self.write_as(Format::V2Declared, declared, body, chunk)
            .await
    }

    async fn write_as(
        &self,
        format: Format,
        declared: &[u8],
        body: &[u8],
        chunk: usize,
    ) -> (BlobRecord, Result<[u8; 32], Error>) {
        let id = new_id();
        let ctx = EncryptionContext::new(
            id,
            "conf",
            declared.len() as u64,
            vault_crypto::sha256(declared),
        )
        .unwrap();
        let dek = Dek::generate().unwrap();
        let wrapped = self.ring.wrap_dek(&dek, &ctx).unwrap();
        let sha = *ctx.plaintext_sha256();
        let enc = match format {
            Format::V1 => BlobEncryptor::new(&dek, self.ring.id(), 1, ctx, SEG).unwrap(),
            Format::V2Declared | Format::V2Streamed => {
                let mut e = BlobEncryptor::digest_last(&dek, self.ring.id(), 1, ctx, SEG).unwrap();
                if format == Format::V2Declared {
                    e.set_digest(sha).unwrap();
                }
                e
            }
        };
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let res = self
            .store
            .write(&hex::encode(id), enc, futures_util::stream::iter(chunks))
            .await;
        let rec = BlobRecord {
            id: hex::encode(id),
            namespace: "conf".into(),
            size: declared.len() as u64,
            sha256: hex::encode(vault_crypto::sha256(declared)),
            wrapped_dek: wrapped,
            refs: 1,
            pending_session: None,
            created: 0,
            sensitivity: String::new(),
            kind: String::new(),
            artifact: String::new(),
        };
        (rec, res)
    }

    async fn read(&self, rec: &BlobRecord, offset: u64) -> Result<Vec<u8>, Error> {
        let mut s = self.store.read(rec, &self.ring, offset).await?;
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }
}

/// How a blob is written: v1 (digest in the header), or v2 with the digest
/// declared first or found while the body streams in.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Format {
    V1,
    V2Declared,
    V2Streamed,
}

async fn suite(raw: Arc<dyn ObjectStore>) {
    suite_on(raw.clone(), BlobStore::new(raw)).await
}

async fn suite_on(raw: Arc<dyn ObjectStore>, store: BlobStore) {
    let f = Fixture::new(raw, store);
    // Round trips, several sizes and chunkings, one above the 8 MiB multipart part.
    for (size, chunk) in [
        (0, 1),
        (1, 1),
        (4095, 100),
        (4096, 4096),
        (3 * 4096 + 5, 7000),
        (20 << 20, 1 << 20),
    ] {
        let d = data(size, size as u8);
        let (rec, res) = f.write(&d, &d, chunk).await;
        res.unwrap_or_else(|e| panic!("write {size}: {e}"));
        assert_eq!(f.read(&rec, 0).await.unwrap(), d, "size {size}");
        assert!(f.store.list_ids().await.unwrap().contains(&rec.id));
    }
    // Ranged reads from every kind of offset.
    let d = data(5 * 4096 + 123, 9);
    let (rec, res) = f.write(&d, &d, 3333).await;
    res.unwrap();
    for off in [
        0usize,
        1,
        4095,
        4096,
        4097,
        2 * 4096,
        5 * 4096,
        5 * 4096 + 122,
        5 * 4096 + 123,
    ] {
        assert_eq!(
            f.read(&rec, off as u64).await.unwrap(),
            d[off..],
            "offset {off}"
        );
    }
    assert!(f.read(&rec, d.len() as u64 + 1).await.is_err());
    // Bodies that disagree with what was declared leave no object behind.
    let d = data(10_000, 3);
    let mut other = d.clone();
    other[5000] ^= 1;
    for (body, what) in [
        (&d[..9999], "short"),
        (&[d.clone(), vec![0]].concat()[..], "long"),
        (&other[..], "digest"),
    ] {
        let before = f.store.list_ids().await.unwrap().len();
        let (rec, res) = f.write(&d, body, 1000).await;
        assert!(matches!(res, Err(Error::Mismatch(_))), "{what}: {res:?}");
        assert!(
            !f.store.list_ids().await.unwrap().contains(&rec.id),
            "{what}: object left"
        );
        assert_eq!(f.store.list_ids().await.unwrap().len(), before);
    }
    // Tampering with the stored object is detected.
    let d = data(3 * 4096, 4);
    let (rec, res) = f.write(&d, &d, 4096).await;
    res.unwrap();
    let path = Path::from(format!("blobs/{}/{}", &rec.id[..2], rec.id));
    let mut stored = f
        .raw
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let intact = stored.clone();
    let last = stored.len() - 5;
    stored[last] ^= 0x40;
    f.raw.put(&path, stored.into()).await.unwrap();
    let err = f.read(&rec, 0).await.unwrap_err();
    assert!(matches!(err, Error::Crypto(_)), "{err:?}");
    // A flip in a middle segment fails a read that starts before it, and
    // one that starts inside it.
    let mut stored = intact.clone();
    let mid = stored.len() / 2;
    stored[mid] ^= 1;
    f.raw.put(&path, stored.into()).await.unwrap();
    for off in [0u64, 4096 + 7] {
        let err = f.read(&rec, off).await.unwrap_err();
        assert!(matches!(err, Error::Crypto(_)), "offset {off}: {err:?}");
    }
    // A truncated object is an error, never a short plaintext.
    f.raw
        .put(&path, intact[..intact.len() - 100].to_vec().into())
        .await
        .unwrap();
    assert!(f.read(&rec, 0).await.is_err());
    f.raw.put(&path, intact.into()).await.unwrap();
    assert_eq!(f.read(&rec, 0).await.unwrap(), d);
    // Blobs written before format v2 still read; a streamed v2 blob is
    // bound to the digest found while writing, and read against any other
    // digest fails at its final segment.
    let d = data(3 * 4096 + 77, 6);
    let (v1, res) = f.write_as(Format::V1, &d, &d, 5000).await;
    assert_eq!(res.unwrap(), vault_crypto::sha256(&d));
    assert_eq!(f.read(&v1, 0).await.unwrap(), d);
    assert_eq!(f.read(&v1, 4096).await.unwrap(), d[4096..]);
    let mut claimed = d.clone();
    claimed[0] ^= 1;
    let (mut streamed, res) = f.write_as(Format::V2Streamed, &claimed, &d, 5000).await;
    let found = res.unwrap();
    assert_eq!(found, vault_crypto::sha256(&d));
    let err = f.read(&streamed, 0).await.unwrap_err();
    assert!(matches!(err, Error::Crypto(_)), "{err:?}");
    // The server re-wraps the DEK for the found digest once it is known.
    let dek = f
        .ring
        .unwrap_dek(&streamed.wrapped_dek, &streamed.context().unwrap())
        .unwrap();
    streamed.sha256 = hex::encode(found);
    streamed.wrapped_dek = f.ring.wrap_dek(&dek, &streamed.context().unwrap()).unwrap();
    assert_eq!(f.read(&streamed, 0).await.unwrap(), d);
    assert_eq!(
        f.read(&streamed, 2 * 4096 + 1).await.unwrap(),
        d[2 * 4096 + 1..]
    );
    // Delete, idempotently; a deleted blob is gone.
    f.store.delete(&rec.id).await.unwrap();
    f.store.delete(&rec.id).await.unwrap();
    assert!(matches!(f.read(&rec, 0).await, Err(Error::MissingBlob(_))));
    f.store.ping().await.unwrap();
}

#[tokio::test]
async fn in_memory() {
    suite(Arc::new(object_store::memory::InMemory::new())).await;
}

#[tokio::test]
async fn local_file_system() {
    let dir = tempfile::tempdir().unwrap();
    suite(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
    ))
    .await;
}

/// The local backend as the server runs it: blob data written and read
/// with direct I/O in the directory `LocalFileSystem` lists. No staging
/// file may be left behind, whatever failed.
#[tokio::test]
async fn local_direct_io() {
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    for reads in [
        LocalReads::Direct,
        LocalReads::PageCache,
        LocalReads::Hot(Duration::from_secs(60)),
    ] {
        let store = BlobStore::new(raw.clone()).with_local_dir(dir.path().to_path_buf(), reads);
        suite_on(raw.clone(), store).await;
    }
    let mut left = vec![];
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else if e.file_name().to_string_lossy().contains('#') {
                left.push(e.path());
            }
        }
    }
    assert!(left.is_empty(), "staging files left: {left:?}");
}

#[tokio::test]
async fn s3_garage() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Ok(endpoint) = std::env::var("MLVAULT_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("MLVAULT_REQUIRE_S3").is_none(),
            "MLVAULT_REQUIRE_S3 is set but MLVAULT_S3_ENDPOINT is not"
        );
        eprintln!("SKIPPED s3_garage: no MLVAULT_S3_ENDPOINT (`.ci/run` starts Garage)");
        return;
    };
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_bucket_name(std::env::var("MLVAULT_S3_BUCKET").unwrap_or_else(|_| "mlvault".into()))
        .with_region(std::env::var("MLVAULT_S3_REGION").unwrap_or_else(|_| "garage".into()))
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    // A prefix per run keeps runs apart in a shared bucket.
    let prefix = format!("conformance-{}", hex::encode(new_id()));
    suite(Arc::new(object_store::prefix::PrefixStore::new(
        s3,
        prefix.as_str(),
    )))
    .await;
}
