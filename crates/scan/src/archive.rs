//! Zip archives, read by the strict reader (`zip`) and judged by what
//! they hold: a PyTorch checkpoint (`<root>/data.pkl` and its storages:
//! every pickle member goes through the pickle judge), a Keras `.keras`
//! file (its `config.json` may name no layer that runs code and no object
//! outside Keras), or NumPy `.npz` arrays (each member an `.npy`). Any
//! other archive is `unsupported`.

use std::io::{Read, Seek};

use crate::zip::{self, Member};
use crate::{npy, pickle, FileReport, Verdict};

/// A pickle member read at most.
const MAX_PICKLE_MEMBER: u64 = 1 << 30;
/// A Keras config read at most.
const MAX_CONFIG: u64 = 64 << 20;
/// Bytes of an `.npz` member read to judge its header (a compressed one
/// is inflated whole, at most this much).
const MAX_NPY_MEMBER: u64 = 256 << 20;

/// Keras classes that run code or load it from elsewhere.
const KERAS_CODE: &[&str] = &[
    "Lambda",
    "TFSMLayer",
    "TorchModuleWrapper",
    "JaxLayer",
    "FlaxLayer",
    "__lambda__",
    "function",
];

pub(crate) fn validate<R: Read + Seek>(
    file: &mut R,
    len: u64,
    allow: &[&str],
    report: &mut FileReport,
) {
    let members = match zip::members(file, len) {
        Ok(m) => m,
        Err(zip::Refused(why)) => {
            report.find(Verdict::Fail, "zip.malformed", why);
            return;
        }
    };
    report
        .details
        .insert("zip.entries".into(), members.len().to_string());
    let lower = report.path.to_ascii_lowercase();
    let root = common_root(&members);
    let has = |n: &str| members.iter().any(|m| m.name == n);
    if let Some(root) = root.as_deref().filter(|r| has(&format!("{r}/data.pkl"))) {
        report.details.insert("archive".into(), "pytorch".into());
        pytorch(file, &members, root, allow, report);
    } else if has("config.json") && (has("metadata.json") || lower.ends_with(".keras")) {
        report.details.insert("archive".into(), "keras".into());
        keras(file, &members, allow, report);
    } else if !members.is_empty() && members.iter().all(|m| m.name.ends_with(".npy")) {
        report.details.insert("archive".into(), "npz".into());
        npz(file, &members, report);
    } else {
        report.find(
            Verdict::Unsupported,
            "zip.unknown",
            "a zip archive of no layout the scanner judges (PyTorch, Keras, NumPy)",
        );
    }
}

/// The first path component every member shares, if one does.
fn common_root(members: &[Member]) -> Option<String> {
    let first = members.first()?.name.split('/').next()?.to_owned();
    members
        .iter()
        .all(|m| m.name.starts_with(&format!("{first}/")))
        .then_some(first)
}

/// Judge every pickle member against `allow`, its imports recorded.
fn judge_pickle_member<R: Read + Seek>(
    file: &mut R,
    m: &Member,
    allow: &[&str],
    report: &mut FileReport,
) {
    match zip::read_member(file, m, MAX_PICKLE_MEMBER) {
        Ok(data) => {
            let mut inner = FileReport::new(&m.name, crate::Format::Pickle);
            pickle::judge(&data, allow, &mut inner);
            report.absorb(&m.name, inner);
        }
        Err(zip::Refused(why)) => report.find(Verdict::Fail, "zip.member", why),
    }
}

fn pytorch<R: Read + Seek>(
    file: &mut R,
    members: &[Member],
    root: &str,
    allow: &[&str],
    report: &mut FileReport,
) {
    for m in members {
        let rel = &m.name[root.len() + 1..];
        if rel.ends_with(".pkl") {
            judge_pickle_member(file, m, allow, report);
        } else if rel.starts_with("code/") || rel.ends_with(".py") {
            report.find(
                Verdict::Unsupported,
                "torch.script",
                format!(
                    "`{}`: a TorchScript program is code the loader runs; it is not judged",
                    m.name
                ),
            );
        } else if !(rel.starts_with("data/")
            || rel.starts_with(".data/")
            || matches!(
                rel,
                "version" | "byteorder" | ".format_version" | ".storage_alignment"
            ))
        {
            report.find(
                Verdict::Warn,
                "torch.member",
                format!("`{}` is no part of a PyTorch checkpoint", m.name),
            );
        }
    }
}

fn keras<R: Read + Seek>(
    file: &mut R,
    members: &[Member],
    allow: &[&str],
    report: &mut FileReport,
) {
    for m in members {
        if m.name.ends_with(".pkl") || m.name.ends_with(".pickle") {
            judge_pickle_member(file, m, allow, report);
        }
    }
    let Some(config) = members.iter().find(|m| m.name == "config.json") else {
        return;
    };
    let text = match zip::read_member(file, config, MAX_CONFIG) {
        Ok(t) => t,
        Err(zip::Refused(why)) => return report.find(Verdict::Fail, "zip.member", why),
    };
    let value: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            return report.find(
                Verdict::Fail,
                "keras.config",
                format!("config.json does not parse: {e}"),
            )
        }
    };
    let mut found = Vec::new();
    keras_walk(&value, &mut found);
    found.sort();
    found.dedup();
    for (code, msg) in found {
        report.find(Verdict::Fail, code, msg);
    }
}

/// Layers and objects in a Keras config that run code or come from
/// outside Keras.
fn keras_walk(v: &serde_json::Value, found: &mut Vec<(&'static str, String)>) {
    match v {
        serde_json::Value::Object(o) => {
            if let Some(class) = o.get("class_name").and_then(|c| c.as_str()) {
                if KERAS_CODE.contains(&class) {
                    found.push((
                        "keras.code",
                        format!("a `{class}` layer or object runs code when the model loads"),
                    ));
                }
                let module = o.get("module").and_then(|m| m.as_str());
                match module {
                    Some(m) if m == "keras" || m.starts_with("keras.") => {}
                    // Keras 3 writes no module for a few built-ins.
                    None => {}
                    Some(m) => found.push((
                        "keras.custom",
                        format!("`{class}` comes from module `{m}`, outside Keras"),
                    )),
                }
                if let Some(reg) = o.get("registered_name").and_then(|r| r.as_str()) {
                    if reg.contains('>') {
                        found.push((
                            "keras.custom",
                            format!("`{reg}` is a custom registered object"),
                        ));
                    }
                }
            }
            for x in o.values() {
                keras_walk(x, found);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| keras_walk(x, found)),
        _ => {}
    }
}

fn npz<R: Read + Seek>(file: &mut R, members: &[Member], report: &mut FileReport) {
    for m in members {
        let data = if m.method == 0 {
            // Stored: only the header is read.
            let want = m.size.min(npy::MAX_HEADER as u64 + 12);
            let head = Member {
                size: want,
                compressed: want,
                ..m.clone()
            };
            match read_prefix(file, &head) {
                Ok(d) => d,
                Err(why) => return report.find(Verdict::Fail, "zip.member", why),
            }
        } else {
            match zip::read_member(file, m, MAX_NPY_MEMBER) {
                Ok(d) => d,
                Err(zip::Refused(why)) => {
                    return report.find(Verdict::Incomplete, "zip.member", why)
                }
            }
        };
        let mut inner = FileReport::new(&m.name, crate::Format::Npy);
        npy::judge(&data, m.size, &mut inner);
        report.absorb(&m.name, inner);
    }
}

fn read_prefix<R: Read + Seek>(file: &mut R, m: &Member) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; usize::try_from(m.size).map_err(|_| "too large")?];
    file.seek(std::io::SeekFrom::Start(m.data_start))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| format!("cannot read `{}`: {e}", m.name))?;
    Ok(buf)
}
