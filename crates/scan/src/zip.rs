//! A strict zip reader: an archive is read the way every loader must read
//! it, or refused. The central directory is the index; each entry's local
//! header must agree with it (name, method, flags, sizes and CRC where it
//! gives them), entries lie inside the file without overlapping each
//! other or the directory, nothing precedes the first entry, names stay
//! inside the archive, and no entry is encrypted or uses a flag or method
//! the reader does not know. Members that are judged are read whole
//! (bounded) and their CRC checked; tensor data is never read.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

/// Entries in an archive at most.
pub(crate) const MAX_ENTRIES: u64 = 100_000;
/// Central directory bytes at most.
const MAX_DIRECTORY: u64 = 64 << 20;
/// The end record is within this many bytes of the end (record and the
/// longest comment).
const EOCD_SEARCH: u64 = 22 + 0xffff;

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const EOCD: u32 = 0x0605_4b50;
const EOCD64: u32 = 0x0606_4b50;
const LOCATOR64: u32 = 0x0706_4b50;

/// Flag bits a member may carry: 3 (sizes in a data descriptor), 11
/// (UTF-8 names); 1 and 2 only qualify deflate's level.
const KNOWN_FLAGS: u16 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 11);

/// One member, as the central directory lists it and its local header
/// confirms.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub name: String,
    /// 0 stored, 8 deflated.
    pub method: u16,
    pub flags: u16,
    pub crc: u32,
    pub compressed: u64,
    pub size: u64,
    /// Where its (compressed) bytes start.
    pub data_start: u64,
}

/// Why an archive is refused.
pub(crate) struct Refused(pub String);

fn refuse<T>(msg: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(msg.into()))
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn read_at<R: Read + Seek>(file: &mut R, at: u64, n: u64) -> Result<Vec<u8>, Refused> {
    let n = usize::try_from(n).map_err(|_| Refused("a read too large".into()))?;
    let mut buf = vec![0u8; n];
    file.seek(SeekFrom::Start(at))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| Refused(format!("cannot read the archive: {e}")))?;
    Ok(buf)
}

/// Where the central directory is and how many entries it lists.
struct Directory {
    offset: u64,
    size: u64,
    entries: u64,
    /// Where the end records start (the directory must end there).
    end: u64,
}

fn find_directory<R: Read + Seek>(file: &mut R, len: u64) -> Result<Directory, Refused> {
    if len < 22 {
        return refuse("too short for a zip archive");
    }
    let from = len.saturating_sub(EOCD_SEARCH);
    let tail = read_at(file, from, len - from)?;
    // The end record whose comment runs exactly to the end of the file;
    // exactly one may (a second is a way to show two readers two
    // archives).
    let mut found = None;
    for i in (0..=tail.len() - 22).rev() {
        if u32le(&tail, i) == EOCD && i + 22 + usize::from(u16le(&tail, i + 20)) == tail.len() {
            if found.is_some() {
                return refuse("two end-of-directory records fit the end of the file");
            }
            found = Some(i);
        }
    }
    let Some(i) = found else {
        return refuse("no end-of-central-directory record ends the file");
    };
    let e = &tail[i..];
    let eocd_at = from + i as u64;
    let (disk, cd_disk) = (u16le(e, 4), u16le(e, 6));
    let (on_disk, total) = (u64::from(u16le(e, 8)), u64::from(u16le(e, 10)));
    let (size, offset) = (u64::from(u32le(e, 12)), u64::from(u32le(e, 16)));
    let zip64 =
        on_disk == 0xffff || total == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff;
    if !zip64 {
        if disk != 0 || cd_disk != 0 || on_disk != total {
            return refuse("a multi-disk (spanned) archive");
        }
        return Ok(Directory {
            offset,
            size,
            entries: total,
            end: eocd_at,
        });
    }
    // Zip64: a locator just before the end record names the zip64 end
    // record, which must end where the locator starts.
    if eocd_at < 20 + 56 {
        return refuse("a zip64 archive without its zip64 records");
    }
    let loc = read_at(file, eocd_at - 20, 20)?;
    if u32le(&loc, 0) != LOCATOR64 {
        return refuse("a zip64 archive without a zip64 end-of-directory locator");
    }
    let rec_at = u64le(&loc, 8);
    if u32le(&loc, 4) != 0 || u32le(&loc, 16) != 1 {
        return refuse("a multi-disk (spanned) zip64 archive");
    }
    if rec_at.checked_add(56) != Some(eocd_at - 20) {
        return refuse("the zip64 end record is not where its locator says");
    }
    let r = read_at(file, rec_at, 56)?;
    if u32le(&r, 0) != EOCD64 || u64le(&r, 4) != 44 {
        return refuse("a malformed zip64 end-of-directory record");
    }
    if u32le(&r, 16) != 0 || u32le(&r, 20) != 0 || u64le(&r, 24) != u64le(&r, 32) {
        return refuse("a multi-disk (spanned) zip64 archive");
    }
    Ok(Directory {
        offset: u64le(&r, 48),
        size: u64le(&r, 40),
        entries: u64le(&r, 32),
        end: rec_at,
    })
}

/// A name a loader extracts inside the archive's root, or why not.
fn check_name(raw: &[u8]) -> Result<String, Refused> {
    let name = std::str::from_utf8(raw)
        .map_err(|_| Refused("an entry name that is not UTF-8".into()))?
        .to_owned();
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.contains(':')
        || name.split('/').any(|c| c == "..")
    {
        return refuse(format!(
            "entry `{}` would be extracted outside the archive root",
            name.escape_debug()
        ));
    }
    Ok(name)
}

/// The zip64 extended field of a central entry: the values that are
/// `0xffffffff` in the entry itself, in order.
fn zip64_values(extra: &[u8], want: &mut [&mut u64]) -> Result<(), Refused> {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let (id, n) = (u16le(extra, at), usize::from(u16le(extra, at + 2)));
        let body = extra
            .get(at + 4..at + 4 + n)
            .ok_or_else(|| Refused("an extra field runs past its entry".into()))?;
        if id == 0x0001 {
            let mut i = 0;
            for w in want.iter_mut().filter(|w| ***w == 0xffff_ffff) {
                if i + 8 > body.len() {
                    return refuse("a zip64 field shorter than its entry needs");
                }
                **w = u64le(body, i);
                i += 8;
            }
            return Ok(());
        }
        at += 4 + n;
    }
    if at != extra.len() {
        return refuse("a malformed extra field");
    }
    if want.iter().any(|w| **w == 0xffff_ffff) {
        return refuse("an entry needs a zip64 field it does not have");
    }
    Ok(())
}

/// Every member of the archive, checked as the module says; or why it is
/// refused.
pub(crate) fn members<R: Read + Seek>(file: &mut R, len: u64) -> Result<Vec<Member>, Refused> {
    let dir = find_directory(file, len)?;
    if dir.entries > MAX_ENTRIES {
        return refuse(format!(
            "{} entries (at most {MAX_ENTRIES} are read)",
            dir.entries
        ));
    }
    if dir.size > MAX_DIRECTORY {
        return refuse(format!("a central directory of {} bytes", dir.size));
    }
    if dir.offset.checked_add(dir.size) != Some(dir.end) {
        return refuse("the central directory does not end where the end record starts");
    }
    let cd = read_at(file, dir.offset, dir.size)?;
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut at = 0usize;
    while at < cd.len() {
        if at + 46 > cd.len() || u32le(&cd, at) != CENTRAL {
            return refuse("a malformed central directory entry");
        }
        let e = &cd[at..];
        let flags = u16le(e, 8);
        let method = u16le(e, 10);
        let crc = u32le(e, 16);
        let mut compressed = u64::from(u32le(e, 20));
        let mut size = u64::from(u32le(e, 24));
        let (n, x, c) = (
            usize::from(u16le(e, 28)),
            usize::from(u16le(e, 30)),
            usize::from(u16le(e, 32)),
        );
        let disk = u16le(e, 34);
        let mut local = u64::from(u32le(e, 42));
        let Some(rest) = e.get(46..46 + n + x + c) else {
            return refuse("a central directory entry runs past the directory");
        };
        let name = check_name(&rest[..n])?;
        zip64_values(
            &rest[n..n + x],
            &mut [&mut size, &mut compressed, &mut local],
        )?;
        if disk != 0 && disk != 0xffff {
            return refuse("a multi-disk (spanned) archive");
        }
        if flags & 1 != 0 || flags & (1 << 6) != 0 || flags & (1 << 13) != 0 {
            return refuse(format!("entry `{name}` is encrypted"));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return refuse(format!(
                "entry `{name}` has flag bits {flags:#06x} the reader does not know"
            ));
        }
        if method != 0 && method != 8 {
            return refuse(format!(
                "entry `{name}` uses compression method {method} (only stored and deflate are read)"
            ));
        }
        if method == 0 && compressed != size {
            return refuse(format!(
                "stored entry `{name}` has a compressed size unlike its size"
            ));
        }
        if !names.insert(name.clone()) {
            return refuse(format!("entry `{name}` is listed twice"));
        }
        out.push(Member {
            name,
            method,
            flags,
            crc,
            compressed,
            size,
            data_start: local,
        });
        at += 46 + n + x + c;
        if out.len() as u64 > dir.entries {
            break;
        }
    }
    if out.len() as u64 != dir.entries {
        return refuse(format!(
            "the end record counts {} entries, the directory lists {}",
            dir.entries,
            out.len()
        ));
    }
    // Each local header agrees with its entry; entries tile the file from
    // byte 0 to the directory without overlap (a data descriptor may
    // follow an entry's data).
    let mut spans = Vec::with_capacity(out.len());
    for m in out.iter_mut() {
        let header_at = m.data_start;
        if header_at.checked_add(30).is_none_or(|e| e > dir.offset) {
            return refuse(format!(
                "entry `{}`'s local header is out of bounds",
                m.name
            ));
        }
        let h = read_at(file, header_at, 30)?;
        if u32le(&h, 0) != LOCAL {
            return refuse(format!(
                "entry `{}` has no local header where listed",
                m.name
            ));
        }
        let (lflags, lmethod) = (u16le(&h, 6), u16le(&h, 8));
        let (n, x) = (u64::from(u16le(&h, 26)), u64::from(u16le(&h, 28)));
        let lname = read_at(file, header_at + 30, n)?;
        if lname != m.name.as_bytes() {
            return refuse(format!(
                "entry `{}` is named differently in its local header",
                m.name
            ));
        }
        if lmethod != m.method || lflags != m.flags {
            return refuse(format!(
                "entry `{}`'s local header disagrees with the directory (method or flags)",
                m.name
            ));
        }
        if lflags & (1 << 3) == 0 {
            let (lcrc, lc, ls) = (u32le(&h, 14), u32le(&h, 18), u32le(&h, 22));
            let sizes_ok = (lc == 0xffff_ffff && ls == 0xffff_ffff)
                || (u64::from(lc) == m.compressed && u64::from(ls) == m.size);
            if lcrc != m.crc || !sizes_ok {
                return refuse(format!(
                    "entry `{}`'s local header disagrees with the directory (CRC or sizes)",
                    m.name
                ));
            }
        }
        m.data_start = header_at + 30 + n + x;
        let end = m
            .data_start
            .checked_add(m.compressed)
            .filter(|e| *e <= dir.offset)
            .ok_or_else(|| Refused(format!("entry `{}` runs past the archive", m.name)))?;
        spans.push((header_at, end, lflags & (1 << 3) != 0, m.name.clone()));
    }
    spans.sort();
    // (end of the last entry, whether a data descriptor may follow it)
    let mut pos = (0u64, false);
    for (start, end, descriptor, name) in &spans {
        if *start < pos.0 {
            return refuse(format!("entry `{name}` overlaps the one before it"));
        }
        if *start > pos.0 && !(pos.1 && is_descriptor_gap(pos.0, *start)) {
            return refuse(if pos.0 == 0 {
                "bytes before the first entry (another format prepended)".to_string()
            } else {
                format!("unlisted bytes before entry `{name}`")
            });
        }
        pos = (*end, *descriptor);
    }
    if pos.0 < dir.offset && !(pos.1 && is_descriptor_gap(pos.0, dir.offset)) {
        return refuse("unlisted bytes before the central directory");
    }
    Ok(out)
}

/// Whether `start..end` is the size of one data descriptor (12, 16, 20
/// or 24 bytes, with or without its signature, zip64 or not): too short
/// to hide a member.
fn is_descriptor_gap(start: u64, end: u64) -> bool {
    matches!(end - start, 12 | 16 | 20 | 24)
}

/// The bytes of member `m`, inflated if need be, at most `limit`, with
/// their CRC checked.
pub(crate) fn read_member<R: Read + Seek>(
    file: &mut R,
    m: &Member,
    limit: u64,
) -> Result<Vec<u8>, Refused> {
    if m.size > limit {
        return refuse(format!(
            "entry `{}` holds {} bytes (at most {limit} are read)",
            m.name, m.size
        ));
    }
    let raw = read_at(file, m.data_start, m.compressed)?;
    let data = match m.method {
        0 => raw,
        _ => {
            let cap = usize::try_from(m.size).map_err(|_| Refused("too large".into()))?;
            let data =
                miniz_oxide::inflate::decompress_to_vec_with_limit(&raw, cap).map_err(|_| {
                    Refused(format!(
                        "entry `{}` does not inflate to its listed size",
                        m.name
                    ))
                })?;
            if data.len() as u64 != m.size {
                return refuse(format!(
                    "entry `{}` inflates to {} bytes, not its listed {}",
                    m.name,
                    data.len(),
                    m.size
                ));
            }
            data
        }
    };
    if crc32fast::hash(&data) != m.crc {
        return refuse(format!(
            "entry `{}` fails its CRC: a loader that ignores it would read other bytes than the scan",
            m.name
        ));
    }
    Ok(data)
}
