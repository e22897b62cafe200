//! Where downloaded bytes go: a partial file written in aligned blocks and a
//! SHA-256 running on its own thread, so hashing, the CPU ceiling of a pull,
//! overlaps with receiving and writing. The file is written through the page
//! cache (early writeback keeps the final fsync short) because a loader
//! usually reads it next; `--direct-io` ([`crate::PullOptions::direct_io`])
//! or `MLVAULT_DIRECT_IO=on` writes it with direct I/O instead (see
//! `vault-directio`).

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};

use bytes::Bytes;
use ring::digest::Context;
use vault_directio::{Block, Writer, ALIGN};

/// Bytes in one block handed to the writer and then the hasher.
const BLOCK: usize = 2 << 20;

/// Blocks in flight between receiving, writing and hashing.
const BLOCKS: usize = 3;

/// Write everything `rx` yields to `path` from byte `start` on, with direct
/// I/O where the file system takes it if `direct` (the file is
/// already exactly `start` bytes long, a multiple of [`ALIGN`] unless it is
/// complete), feeding the same bytes to `hasher` on a second thread. The
/// file should end at `size` bytes; when `rx` ends early, only whole
/// [`ALIGN`]ed blocks are kept so the next run can resume. Returns the
/// hasher once the file is written and synced. Runs on a blocking thread.
pub(crate) fn write_partial(
    path: &Path,
    start: u64,
    size: u64,
    direct: bool,
    mut hasher: Context,
    rx: Receiver<Bytes>,
) -> io::Result<Context> {
    let (pool_tx, pool) = sync_channel::<Block>(BLOCKS);
    let (hash_tx, hash_rx) = sync_channel::<Block>(BLOCKS);
    for _ in 0..BLOCKS - 1 {
        let _ = pool_tx.send(Block::new(BLOCK));
    }
    let hashing = std::thread::spawn(move || {
        for mut block in hash_rx {
            hasher.update(block.data());
            block.clear();
            // The writer may be gone after an error; the block is then freed.
            let _ = pool_tx.send(block);
        }
        hasher
    });
    let stopped = || io::Error::other("the hashing thread stopped");
    let result = (move || {
        let mut opts = OpenOptions::new();
        // `path` names a file in the open staging folder; a link planted
        // at that name is refused, not followed.
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            opts.write(true).create(true),
            rustix::fs::OFlags::NOFOLLOW.bits() as i32,
        );
        let mut out = if direct {
            Writer::open(&opts, path)?
        } else {
            Writer::open_buffered(&opts, path)?
        };
        let mut offset = start;
        let mut block = Block::new(BLOCK);
        // Write the block, hand it to the hasher, take an empty one.
        let mut pass = |block: &mut Block, offset: &mut u64| -> io::Result<()> {
            out.write(block, *offset)?;
            *offset += block.len() as u64;
            let next = pool.recv().map_err(|_| stopped())?;
            hash_tx
                .send(std::mem::replace(block, next))
                .map_err(|_| stopped())
        };
        for chunk in rx {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = block.fill(rest);
                rest = &rest[n..];
                if block.is_full() {
                    pass(&mut block, &mut offset)?;
                }
            }
        }
        if offset + (block.len() as u64) < size {
            block.truncate(block.len() / ALIGN * ALIGN);
        }
        if !block.is_empty() {
            pass(&mut block, &mut offset)?;
        }
        out.finish(offset)
    })();
    let hasher = hashing
        .join()
        .map_err(|_| io::Error::other("the hashing thread panicked"))?;
    result.map(|()| hasher)
}
