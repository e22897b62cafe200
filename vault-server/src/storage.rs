//! Choosing the blob backend from the `[storage]` section of the config.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use vault_store::BlobStore;

use crate::config::{Backend, StorageConfig};
use crate::exit::{fail, ExitStatus};

/// Client timeouts and retries: a store that is down fails requests in
/// seconds (exit code 7 for clients), not minutes.
fn client_options(cfg: &StorageConfig) -> (ClientOptions, RetryConfig) {
    let opts = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(cfg.timeout_secs))
        .with_allow_http(cfg.allow_http);
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..Default::default()
    };
    (opts, retry)
}

/// The blob store the config names. The local backend writes and reads blob
/// data with direct I/O (`vault-directio`) and lists and deletes through
/// object_store's `LocalFileSystem` on the same directory.
pub fn blob_store(cfg: &StorageConfig, blobs_dir: &Path) -> Result<BlobStore> {
    let store = BlobStore::new(build(cfg, blobs_dir)?);
    Ok(match cfg.backend {
        Backend::Local => store.with_local_dir(blobs_dir.to_path_buf(), cfg.local_reads()),
        _ => store,
    })
}

pub fn build(cfg: &StorageConfig, blobs_dir: &Path) -> Result<Arc<dyn ObjectStore>> {
    match cfg.backend {
        Backend::Local => {
            std::fs::create_dir_all(blobs_dir)?;
            Ok(Arc::new(
                // Blob data goes through `BlobStore::with_local_dir` (direct
                // I/O, synced file and directory before a version commits);
                // anything written through this handle is fsynced the same
                // way, so an acknowledged push survives a power cut (as an
                // S3 PUT does), not just a process crash.
                LocalFileSystem::new_with_prefix(blobs_dir)
                    .context("cannot open the blob directory")?
                    .with_fsync(true),
            ))
        }
        Backend::Memory => Ok(Arc::new(InMemory::new())),
        Backend::S3 => {
            let (opts, retry) = client_options(cfg);
            // Credentials and region also come from the standard AWS_* variables.
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_client_options(opts)
                .with_retry(retry)
                .with_virtual_hosted_style_request(false);
            let bucket = cfg.bucket.as_deref().ok_or_else(|| {
                fail(
                    ExitStatus::Usage,
                    "[storage] backend = \"s3\" needs `bucket`",
                )
            })?;
            b = b.with_bucket_name(bucket);
            if let Some(e) = &cfg.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &cfg.region {
                b = b.with_region(r);
            }
            if let Some(k) = &cfg.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = &cfg.secret_access_key {
                b = b.with_secret_access_key(s.expose());
            }
            let s3 = b
                .build()
                .map_err(|e| fail(ExitStatus::Usage, format!("S3 backend configuration: {e}")))?;
            Ok(Arc::new(s3))
        }
        #[cfg(feature = "gcp")]
        Backend::Gcs => {
            let (opts, retry) = client_options(cfg);
            let bucket = cfg.bucket.as_deref().ok_or_else(|| {
                fail(
                    ExitStatus::Usage,
                    "[storage] backend = \"gcs\" needs `bucket`",
                )
            })?;
            let g = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_client_options(opts)
                .with_retry(retry)
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| fail(ExitStatus::Usage, format!("GCS backend configuration: {e}")))?;
            Ok(Arc::new(g))
        }
        #[cfg(feature = "azure")]
        Backend::Azure => {
            let (opts, retry) = client_options(cfg);
            let container = cfg.bucket.as_deref().ok_or_else(|| {
                fail(
                    ExitStatus::Usage,
                    "[storage] backend = \"azure\" needs `bucket` (the container)",
                )
            })?;
            let a = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_client_options(opts)
                .with_retry(retry)
                .with_container_name(container)
                .build()
                .map_err(|e| {
                    fail(
                        ExitStatus::Usage,
                        format!("Azure backend configuration: {e}"),
                    )
                })?;
            Ok(Arc::new(a))
        }
        #[allow(unreachable_patterns)]
        _ => Err(fail(
            ExitStatus::Usage,
            "this backend needs a vault-server built with its cargo feature (gcp, azure)",
        )),
    }
}
