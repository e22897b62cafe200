//! Large sequential files, written and read past the page cache where that
//! pays.
//!
//! mlvault stores multi-gigabyte blobs and then syncs them. On Linux a
//! [`Writer`] from [`Writer::open`] writes them with `O_DIRECT`, so bytes go
//! from a reused, aligned buffer to the device without first being copied
//! into (and evicting other data from) the page cache, and the final sync
//! finds nothing left to flush. Measured on the 2-core development VM
//! (`dd if=/dev/zero bs=4M count=256 conv=fdatasync`, 1 GiB): buffered
//! 0.50–3.2 s wall and 1.2–2.8 s of system CPU in the runs that timed it
//! (the cost of fresh page-cache pages, high on a VM that returns free
//! memory to its host), direct 0.41–0.43 s wall and 0.05 s of system CPU.
//!
//! A file that is read right after it is written (a model a deploy job
//! loads after the pull) is better left in the page cache: whoever reads it
//! first pays for filling the cache anyway, plus a device read.
//! [`Writer::open_buffered`] is for those files. Its writes are cut into
//! pieces of at most 128 KiB: most of the cost of the buffered `dd` above
//! was the write size, not the page cache. A write that covers a whole
//! aligned 1 or 2 MiB range lets the page cache take a folio that large, and
//! on this VM those come from memory the host took back and faults in
//! slowly (the figures are at `BUFFERED_PIECE` in the source).
//!
//! `MLVAULT_DIRECT_IO` ([`Setting`]) overrides: `off` turns direct I/O off,
//! `on` uses it for pulled files too. Direct I/O is only used on local disk
//! file systems (ext2/3/4, XFS, Btrfs, F2FS). Elsewhere (tmpfs, NFS, SMB,
//! FUSE, ZFS, other platforms), or where `O_DIRECT` is refused anyway, a
//! [`Writer`] uses buffered writes with early writeback. Callers see the
//! same result either way: the exact length and a durable file. A
//! [`Reader`] returns exactly the bytes of a range.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use bytes::{Buf, BytesMut};

/// Offsets, lengths and buffer addresses of direct I/O are multiples of this
/// (the largest logical block size in common use).
pub const ALIGN: usize = 4096;

/// Bytes written between two early writeback requests (buffered mode).
const EARLY_FLUSH: u64 = 128 << 20;

/// Longest single write in buffered mode. A write that covers a whole
/// aligned range of 1 MiB or more lets the page cache take a folio that
/// large, and on a VM that reports free memory to its host (virtio-balloon
/// free page reporting, as on the development VM) those come from memory
/// the host took back, which it faults in again slowly. Measured there, 1
/// GiB of zeros to a new ext4 file, `dd bs=N` after 6 s idle: 64 KiB to
/// 256 KiB writes took 0.18–0.22 s, 512 KiB 0.19–0.50 s, 1 MiB 2.23–2.34 s,
/// 2 MiB 2.37–2.53 s (system CPU, nearly all of the wall time). An earlier
/// kernel was fast at 1 MiB too; 128 KiB leaves a margin. Costs a syscall
/// per 128 KiB, about 8,000 per GiB.
const BUFFERED_PIECE: usize = 128 << 10;

/// Offset of the first [`ALIGN`]ed byte in `buf`.
fn align_offset(buf: &[u8]) -> usize {
    (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN
}

/// A reusable buffer of fixed capacity whose contents start at an [`ALIGN`]
/// boundary (over-allocated and sliced, so no unsafe allocation is needed).
pub struct Block {
    raw: Vec<u8>,
    start: usize,
    cap: usize,
    len: usize,
}

impl Block {
    /// An empty block holding up to `cap` bytes (rounded up to [`ALIGN`]).
    pub fn new(cap: usize) -> Block {
        let cap = cap.div_ceil(ALIGN).max(1) * ALIGN;
        let raw = vec![0u8; cap + ALIGN];
        let start = align_offset(&raw);
        Block {
            raw,
            start,
            cap,
            len: 0,
        }
    }

    /// The bytes held.
    pub fn data(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// How many bytes are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether no more bytes fit.
    pub fn is_full(&self) -> bool {
        self.len == self.cap
    }

    /// Forget the contents.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keep only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Append as much of `src` as fits; returns how much was taken.
    pub fn fill(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(self.cap - self.len);
        let at = self.start + self.len;
        self.raw[at..at + n].copy_from_slice(&src[..n]);
        self.len += n;
        n
    }

    /// The contents zero-padded to the next [`ALIGN`] boundary.
    fn padded(&mut self) -> &[u8] {
        let padded = self.len.div_ceil(ALIGN) * ALIGN;
        self.raw[self.start + self.len..self.start + padded].fill(0);
        &self.raw[self.start..self.start + padded]
    }
}

/// The environment variable that chooses a [`Setting`].
pub const ENV: &str = "MLVAULT_DIRECT_IO";

/// Where direct I/O is used, from `MLVAULT_DIRECT_IO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `off` (or `0`, `false`, `no`): buffered I/O everywhere.
    Off,
    /// Unset or `auto`: direct for data that is stored rather than read
    /// next (the server's blobs, [`Writer::open`]); buffered for files a
    /// reader is about to load (a pulled model, [`Writer::open_buffered`]),
    /// so they stay in the page cache for it.
    Auto,
    /// `on` (or `1`, `true`, `yes`): direct for both.
    On,
}

impl Setting {
    /// The setting in the environment now.
    pub fn from_env() -> Setting {
        Setting::parse(std::env::var_os(ENV).as_deref())
    }

    fn parse(v: Option<&std::ffi::OsStr>) -> Setting {
        match v
            .and_then(|v| v.to_str())
            .map(|v| v.trim().to_ascii_lowercase())
        {
            Some(v) if ["off", "0", "false", "no"].contains(&v.as_str()) => Setting::Off,
            Some(v) if ["on", "1", "true", "yes"].contains(&v.as_str()) => Setting::On,
            _ => Setting::Auto,
        }
    }
}

/// Local block-device file systems where `O_DIRECT` is plain DMA to the
/// device: ext2/3/4, XFS, Btrfs, F2FS. Elsewhere (NFS, SMB, FUSE, ZFS,
/// overlay, tmpfs) direct I/O is refused, emulated or turns every write into
/// a synchronous round trip, so buffered I/O is used.
#[cfg(target_os = "linux")]
fn on_local_disk(f: &File) -> bool {
    const LOCAL: [u64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010];
    rustix::fs::fstatfs(f)
        .map(|s| LOCAL.contains(&(s.f_type as u64)))
        .unwrap_or(false)
}

/// Open `path` with `opts`, adding `O_DIRECT` on a local disk file system;
/// returns the file and whether it is direct. Errors other than "direct I/O
/// not supported" are returned as they are (for example `AlreadyExists`
/// with `create_new`).
#[cfg(target_os = "linux")]
fn open_file(opts: &OpenOptions, path: &Path, direct: bool) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    if direct {
        let mut o = opts.clone();
        // Replaces the caller's custom flags: keep `O_NOFOLLOW`, the one
        // callers set, in any case.
        o.custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW);
        match o.open(path) {
            Ok(f) if on_local_disk(&f) => return Ok((f, true)),
            Ok(f) => {
                // Created (or truncated) already: open it again as it is.
                drop(f);
                let mut o = opts.clone();
                o.create(false).create_new(false).truncate(false);
                return Ok((o.open(path)?, false));
            }
            Err(e) if refused(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((opts.open(path)?, false))
}

#[cfg(not(target_os = "linux"))]
fn open_file(opts: &OpenOptions, path: &Path, _direct: bool) -> io::Result<(File, bool)> {
    Ok((opts.open(path)?, false))
}

/// Whether a write or read error means "this file system does not do
/// direct I/O after all" (it accepted the open flag but not the call).
fn refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
}

/// A file written in [`Block`]s at chosen offsets.
pub struct Writer {
    file: File,
    opts: OpenOptions,
    path: std::path::PathBuf,
    direct: bool,
    /// Buffered mode: a thread that asks for writeback of what is written,
    /// so the final sync finds little left to flush.
    flusher: Option<(SyncSender<()>, JoinHandle<()>)>,
    since_flush: u64,
}

impl Writer {
    /// Open `path` for writing with `opts` (which should include `write`,
    /// and `create` or `create_new` as the caller needs); direct on a local
    /// disk file system unless the [`Setting`] is `Off`. For data that is
    /// stored rather than read next.
    pub fn open(opts: &OpenOptions, path: &Path) -> io::Result<Writer> {
        Writer::open_with(opts, path, Setting::from_env() != Setting::Off)
    }

    /// Like [`Writer::open`] for a file that is about to be read (a pulled
    /// model a loader opens next): buffered, so it stays in the page cache,
    /// unless the [`Setting`] is `On`.
    pub fn open_buffered(opts: &OpenOptions, path: &Path) -> io::Result<Writer> {
        Writer::open_with(opts, path, Setting::from_env() == Setting::On)
    }

    fn open_with(opts: &OpenOptions, path: &Path, direct: bool) -> io::Result<Writer> {
        let (file, is_direct) = open_file(opts, path, direct)?;
        let mut w = Writer {
            file,
            opts: opts.clone(),
            path: path.to_path_buf(),
            direct: is_direct,
            flusher: None,
            since_flush: 0,
        };
        if !is_direct {
            w.start_flusher()?;
        }
        Ok(w)
    }

    /// Whether writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn start_flusher(&mut self) -> io::Result<()> {
        let early = self.file.try_clone()?;
        let (tx, rx) = sync_channel::<()>(1);
        let handle = std::thread::spawn(move || {
            for () in rx {
                let _ = early.sync_data();
            }
        });
        self.flusher = Some((tx, handle));
        Ok(())
    }

    /// Fall back to buffered writes on the same file.
    fn fall_back_to_buffered(&mut self) -> io::Result<()> {
        let mut opts = self.opts.clone();
        opts.create(false).create_new(false).truncate(false);
        self.file = opts.open(&self.path)?;
        self.direct = false;
        self.start_flusher()
    }

    /// Write the contents of `block` at `offset`, a multiple of [`ALIGN`]
    /// unless this is the last write. A direct write of a block whose
    /// length is not a multiple of [`ALIGN`] writes zero padding after it,
    /// which [`Writer::finish`] cuts off.
    pub fn write(&mut self, block: &mut Block, offset: u64) -> io::Result<()> {
        if self.direct {
            if !offset.is_multiple_of(ALIGN as u64) {
                self.fall_back_to_buffered()?;
            } else {
                match self.file.write_all_at(block.padded(), offset) {
                    Ok(()) => return Ok(()),
                    Err(e) if refused(&e) => self.fall_back_to_buffered()?,
                    Err(e) => return Err(e),
                }
            }
        }
        let mut at = offset;
        for piece in block.data().chunks(BUFFERED_PIECE) {
            self.file.write_all_at(piece, at)?;
            at += piece.len() as u64;
        }
        self.since_flush += block.len() as u64;
        if self.since_flush >= EARLY_FLUSH {
            if let Some((tx, _)) = &self.flusher {
                // Skipped while the last request is still running.
                let _ = tx.try_send(());
            }
            self.since_flush = 0;
        }
        Ok(())
    }

    /// Set the file's length to exactly `len` (dropping padding) and sync
    /// its data and metadata to the device.
    pub fn finish(mut self, len: u64) -> io::Result<()> {
        if let Some((tx, handle)) = self.flusher.take() {
            drop(tx);
            let _ = handle.join();
        }
        if self.file.metadata()?.len() != len {
            self.file.set_len(len)?;
        }
        self.file.sync_all()
    }
}

/// A file read by ranges: through the page cache, or with direct I/O into
/// a fresh aligned buffer.
pub struct Reader {
    file: File,
    path: std::path::PathBuf,
    direct: bool,
}

impl Reader {
    /// Open `path` for reading through the page cache.
    pub fn open(path: &Path) -> io::Result<Reader> {
        Ok(Reader {
            file: File::open(path)?,
            path: path.to_path_buf(),
            direct: false,
        })
    }

    /// Open `path` for reading with direct I/O where the file system takes
    /// it (through the page cache otherwise).
    pub fn open_direct(path: &Path) -> io::Result<Reader> {
        let mut opts = OpenOptions::new();
        opts.read(true);
        let want = Setting::from_env() != Setting::Off;
        let (file, direct) = open_file(&opts, path, want)?;
        Ok(Reader {
            file,
            path: path.to_path_buf(),
            direct,
        })
    }

    /// Exactly the bytes of `range`; an error of kind `UnexpectedEof` when
    /// the file ends inside it.
    pub fn read_range(&self, range: Range<u64>) -> io::Result<BytesMut> {
        let want = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
        if !self.direct {
            return read_buffered(&self.file, range.start, want);
        }
        match self.read_direct(range.start, want) {
            // Opened direct but refused on read: read this range buffered.
            Err(e) if refused(&e) => read_buffered(&File::open(&self.path)?, range.start, want),
            other => other,
        }
    }

    /// Read the ALIGNed span around the range, then trim to it.
    fn read_direct(&self, start: u64, want: usize) -> io::Result<BytesMut> {
        let lead = (start % ALIGN as u64) as usize;
        let span = (lead + want).div_ceil(ALIGN) * ALIGN;
        let mut buf = BytesMut::zeroed(span + ALIGN);
        buf.advance(align_offset(&buf));
        buf.truncate(span);
        let got = read_full(&self.file, &mut buf, start - lead as u64)?;
        short(got.saturating_sub(lead), want)?;
        buf.advance(lead);
        buf.truncate(want);
        Ok(buf)
    }
}

fn read_buffered(file: &File, start: u64, want: usize) -> io::Result<BytesMut> {
    let mut buf = BytesMut::zeroed(want);
    short(read_full(file, &mut buf, start)?, want)?;
    Ok(buf)
}

fn short(got: usize, want: usize) -> io::Result<()> {
    if got < want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("file ends {} bytes before the range does", want - got),
        ));
    }
    Ok(())
}

/// Read into all of `buf` from `offset`, stopping early only at end of file;
/// returns the bytes read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn write_file(path: &Path, data: &[u8], block: usize) -> bool {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        let mut w = Writer::open(&opts, path).unwrap();
        let direct = w.is_direct();
        let mut b = Block::new(block);
        let mut off = 0u64;
        let mut rest = data;
        while !rest.is_empty() {
            let n = b.fill(rest);
            rest = &rest[n..];
            if b.is_full() || rest.is_empty() {
                w.write(&mut b, off).unwrap();
                off += b.len() as u64;
                b.clear();
            }
        }
        w.finish(data.len() as u64).unwrap();
        direct
    }

    #[test]
    fn unaligned_lengths_and_ranges_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [0usize, 1, 4095, 4096, 4097, 3 * 8192 + 17]
            .into_iter()
            .enumerate()
        {
            let data = pattern(len);
            let path = dir.path().join(format!("f{i}"));
            write_file(&path, &data, 8192);
            assert_eq!(std::fs::read(&path).unwrap(), data, "length {len}");
            for r in [
                Reader::open(&path).unwrap(),
                Reader::open_direct(&path).unwrap(),
            ] {
                for (a, b) in [
                    (0, len),
                    (len / 3, len),
                    (1.min(len), len / 2 + 1),
                    (4097, 8193),
                ] {
                    let (a, b) = (a.min(b).min(len), b.max(a).min(len));
                    let got = r.read_range(a as u64..b as u64).unwrap();
                    assert_eq!(&got[..], &data[a..b], "length {len}, range {a}..{b}");
                }
                let past = r.read_range(0..len as u64 + 1).unwrap_err();
                assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
            }
        }
    }

    #[test]
    fn buffered_writes_of_blocks_larger_than_a_piece_keep_every_byte() {
        // Blocks of 2 MiB are written in BUFFERED_PIECE pieces; an odd tail
        // and a block that ends inside a piece must land where they belong.
        let dir = tempfile::tempdir().unwrap();
        let block = 2 << 20;
        let data = pattern(2 * block + 3 * BUFFERED_PIECE + 5);
        let path = dir.path().join("b");
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        let mut w = Writer::open_with(&opts, &path, false).unwrap();
        assert!(!w.is_direct());
        let mut b = Block::new(block);
        let mut off = 0u64;
        for chunk in data.chunks(block) {
            assert_eq!(b.fill(chunk), chunk.len());
            w.write(&mut b, off).unwrap();
            off += b.len() as u64;
            b.clear();
        }
        w.finish(off).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn blocks_start_aligned() {
        for cap in [1, 4096, 100_000] {
            let mut b = Block::new(cap);
            assert_eq!(b.padded().as_ptr() as usize % ALIGN, 0);
            assert!(b.fill(&pattern(cap)) >= cap.min(ALIGN));
        }
    }

    #[test]
    fn the_environment_chooses_where_direct_io_is_used() {
        use std::ffi::OsStr;
        assert_eq!(Setting::parse(None), Setting::Auto);
        assert_eq!(Setting::parse(Some(OsStr::new("auto"))), Setting::Auto);
        for v in ["off", "0", "false", " OFF ", "no"] {
            assert_eq!(Setting::parse(Some(OsStr::new(v))), Setting::Off, "{v:?}");
        }
        for v in ["on", "1", "TRUE", "yes"] {
            assert_eq!(Setting::parse(Some(OsStr::new(v))), Setting::On, "{v:?}");
        }
    }

    /// On a local disk file system (ext4, XFS, Btrfs, F2FS) writes are
    /// direct; on tmpfs they are not. Whichever this machine has, the bytes
    /// must come back the same (the other tests check that).
    #[cfg(target_os = "linux")]
    #[test]
    fn direct_only_on_local_disk_file_systems() {
        let dir = tempfile::tempdir().unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        let local = on_local_disk(&probe);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        let w = Writer::open(&opts, &dir.path().join("f")).unwrap();
        assert_eq!(w.is_direct(), local && Setting::from_env() != Setting::Off);
        let b = Writer::open_buffered(&opts, &dir.path().join("g")).unwrap();
        assert_eq!(b.is_direct(), local && Setting::from_env() == Setting::On);
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            let w = Writer::open(&opts, &shm.path().join("f")).unwrap();
            assert!(!w.is_direct(), "tmpfs is not a local disk file system");
        }
    }

    /// /dev/shm is tmpfs on Linux; whether or not it takes O_DIRECT, the
    /// bytes must come back the same.
    #[test]
    fn works_where_direct_io_may_be_refused() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let data = pattern(70_001);
        let path = dir.path().join("f");
        write_file(&path, &data, 16384);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        for r in [
            Reader::open(&path).unwrap(),
            Reader::open_direct(&path).unwrap(),
        ] {
            assert_eq!(&r.read_range(5..70_001).unwrap()[..], &data[5..]);
        }
    }
}
