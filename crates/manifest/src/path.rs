//! Path rules for files inside an artifact.

use crate::{Error, Result};

/// Check that `p` is a safe relative path: `/`-separated, not empty, no
/// absolute path, no `.`/`..`/empty segment, no backslash, NUL or control
/// character, no drive prefix, at most 4096 bytes and 255 bytes a segment.
/// Symlinks on the destination are the client's second check.
pub fn validate_path(p: &str) -> Result<()> {
    let bad = |why| {
        Err(Error::UnsafePath {
            path: p.escape_debug().to_string(),
            why,
        })
    };
    if p.is_empty() {
        return bad("empty path");
    }
    if p.len() > 4096 {
        return bad("longer than 4096 bytes");
    }
    if p.starts_with('/') {
        return bad("absolute path");
    }
    if p.contains('\\') {
        return bad("backslash");
    }
    if p.chars().any(char::is_control) {
        return bad("control character or NUL");
    }
    if p.chars().any(is_deceptive) {
        return bad("bidi control, invisible or line-separator character");
    }
    if p.as_bytes().get(1) == Some(&b':') {
        return bad("drive prefix");
    }
    for seg in p.split('/') {
        match seg {
            "" => return bad("empty segment"),
            "." | ".." => return bad("`.` or `..` segment"),
            s if s.len() > 255 => return bad("segment longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// Characters that change how the text around them is displayed, or are
/// not displayed at all: bidi embeddings, overrides, isolates and marks,
/// zero-width characters, line and paragraph separators, interlinear
/// annotations and tag characters. A name holding one can pass for another
/// in a listing or in `audit tail`.
pub fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}')
}

#[cfg(test)]
mod tests {
    use super::validate_path;

    #[test]
    fn refuses_bidi_invisible_and_separator_characters() {
        for p in [
            "model-\u{202E}nib.exe",
            "a\u{2066}b",
            "zero\u{200B}width",
            "line\u{2028}sep",
            "para\u{2029}sep",
            "bom\u{FEFF}x",
            "tag\u{E0041}",
            "mark\u{200F}",
        ] {
            assert!(validate_path(p).is_err(), "{}", p.escape_unicode());
        }
        assert!(validate_path("données/modèle-日本.bin").is_ok());
    }

    #[test]
    fn accepts_normal_paths() {
        for p in ["a", "a/b/c.bin", "model.safetensors", ".hidden", "a..b/c"] {
            validate_path(p).unwrap();
        }
    }

    #[test]
    fn refuses_escapes() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "a\0b",
            "C:/x",
            "a\nb",
        ] {
            assert!(validate_path(p).is_err(), "{p:?}");
        }
    }
}
