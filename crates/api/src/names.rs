//! Artifact names (`namespace/name`) and references (`name:7`,
//! `name:production`, `name@sha256:…`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a name or reference was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Longer than 200 bytes.
    #[error("name `{0}` is longer than 200 bytes")]
    TooLong(String),
    /// Fewer than two segments.
    #[error("name `{0}` must be `namespace/name`")]
    NoNamespace(String),
    /// An empty, `.` or `..` segment.
    #[error("name `{0}` has an empty, `.` or `..` segment")]
    BadSegment(String),
    /// A character outside `[a-z0-9._-]`.
    #[error("name `{0}` may only use lowercase letters, digits, `.`, `_`, `-` and `/`")]
    BadChar(String),
    /// A malformed tag, version or digest.
    #[error("reference `{0}`: {1}")]
    BadSelector(String, &'static str),
}

/// A validated artifact name: `namespace/name[/more]`, lowercase
/// `[a-z0-9._-]` segments, no empty, `.` or `..` segment, at most 200 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArtifactName(String);

impl ArtifactName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first segment: the namespace that grants and keys are scoped to.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

impl TryFrom<String> for ArtifactName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        if s.len() > 200 {
            return Err(NameError::TooLong(s));
        }
        if !s
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/'))
        {
            return Err(NameError::BadChar(s));
        }
        let segs: Vec<&str> = s.split('/').collect();
        if segs.iter().any(|g| g.is_empty() || *g == "." || *g == "..") {
            return Err(NameError::BadSegment(s));
        }
        if segs.len() < 2 {
            return Err(NameError::NoNamespace(s));
        }
        Ok(Self(s))
    }
}

impl From<ArtifactName> for String {
    fn from(n: ArtifactName) -> String {
        n.0
    }
}

impl FromStr for ArtifactName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which version of an artifact a reference selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// No tag: the latest version.
    Latest,
    /// `:7`: an immutable version number.
    Version(u64),
    /// `:production`: a movable alias.
    Alias(String),
    /// `@sha256:<hex>`: a manifest digest, immutable.
    Digest(String),
}

/// A parsed reference: a name and a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The artifact.
    pub name: ArtifactName,
    /// The version selected.
    pub selector: Selector,
}

fn valid_alias(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 64
        && a.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && a.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// True if `s` is `sha256:` followed by 64 lowercase hex digits.
pub fn valid_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        if let Some((name, digest)) = s.split_once('@') {
            if !valid_digest(digest) {
                return Err(NameError::BadSelector(
                    s.into(),
                    "a digest is `sha256:` and 64 lowercase hex digits",
                ));
            }
            return Ok(Reference {
                name: name.parse()?,
                selector: Selector::Digest(digest.to_owned()),
            });
        }
        let (name, selector) = match s.rsplit_once(':') {
            None => (s, Selector::Latest),
            // As docker users expect: the newest (released) version.
            Some((name, LATEST)) => (name, Selector::Latest),
            Some((name, tag)) if !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit()) => {
                let v: u64 = tag
                    .parse()
                    .map_err(|_| NameError::BadSelector(s.into(), "version out of range"))?;
                if v == 0 {
                    return Err(NameError::BadSelector(s.into(), "versions start at 1"));
                }
                (name, Selector::Version(v))
            }
            Some((name, tag)) if valid_alias(tag) => (name, Selector::Alias(tag.to_owned())),
            Some(_) => return Err(NameError::BadSelector(
                s.into(),
                "a tag is a version number or an alias of lowercase letters, digits, `.`, `_`, `-`",
            )),
        };
        Ok(Reference {
            name: name.parse()?,
            selector,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Latest => write!(f, "{}", self.name),
            Selector::Version(v) => write!(f, "{}:{v}", self.name),
            Selector::Alias(a) => write!(f, "{}:{a}", self.name),
            Selector::Digest(d) => write!(f, "{}@{d}", self.name),
        }
    }
}

/// The tag that means the newest version (`ns/name:latest`); no alias may
/// take this name.
pub const LATEST: &str = "latest";

/// True if `a` is a valid alias name (`latest` is reserved).
pub fn is_valid_alias(a: &str) -> bool {
    valid_alias(a) && a != LATEST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_is_the_newest_version_and_no_alias() {
        let r: Reference = "fraud/m:latest".parse().unwrap();
        assert_eq!(r.selector, Selector::Latest);
        assert_eq!(r, "fraud/m".parse().unwrap());
        assert!(!is_valid_alias("latest"));
        assert!(is_valid_alias("latest-rc"));
    }

    #[test]
    fn names() {
        assert!("fraud/detector".parse::<ArtifactName>().is_ok());
        assert!("a/b/c.d_e-f".parse::<ArtifactName>().is_ok());
        for bad in [
            "fraud", "Fraud/x", "a//b", "a/../b", "a/./b", "/a/b", "a/b/", "a/b c", "a\\b/c",
            "a/b\0",
        ] {
            assert!(bad.parse::<ArtifactName>().is_err(), "{bad}");
        }
        assert!(format!("a/{}", "x".repeat(199))
            .parse::<ArtifactName>()
            .is_err());
    }

    #[test]
    fn references() {
        let r: Reference = "a/b:7".parse().unwrap();
        assert_eq!(r.selector, Selector::Version(7));
        let r: Reference = "a/b".parse().unwrap();
        assert_eq!(r.selector, Selector::Latest);
        let d = format!("sha256:{}", "ab".repeat(32));
        let r: Reference = format!("a/b@{d}").parse().unwrap();
        assert_eq!(r.selector, Selector::Digest(d.clone()));
        assert_eq!(r.to_string(), format!("a/b@{d}"));
        for bad in [
            "a/b:",
            "a/b:0",
            "a/b:Prod",
            "a/b@sha256:xyz",
            "a/b:1:2",
            "a/b:-x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
