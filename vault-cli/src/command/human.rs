//! Output for people: UTC dates and short spans where the server and
//! manifests keep Unix seconds (the audit log milliseconds), sizes in
//! binary units beside the exact byte count, counted nouns. `--json` keeps
//! the plain numbers.

use chrono::{DateTime, SecondsFormat};

/// Unix seconds as `2026-11-27T02:49:21Z`.
pub fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map_or_else(
            || secs.to_string(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}

/// Unix milliseconds as `2026-11-27T02:49:21.123Z`.
pub fn utc_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || ms.to_string(),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        )
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A span in its two largest units: `29d 23h`, `5h 2m`, `3m 20s`, `42s`.
pub fn span(secs: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            // Units below a skipped one would mislead (`1d 5s`).
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// `in 29d 23h` for a time ahead of `now`, `expired 3h 2m ago` otherwise.
pub fn expiry(at: u64, now: u64) -> String {
    if at > now {
        format!("in {}", span(at - now))
    } else {
        format!("expired {} ago", span(now - at))
    }
}

/// `1 file`, `3 files`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `32.00 MiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// An amount to the byte: `3 bytes`, `32.00 MiB (33554432 bytes)`.
pub fn amount(bytes: u64) -> String {
    if bytes < 1024 {
        count(bytes, "byte")
    } else {
        format!("{} ({bytes} bytes)", size(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_746_561), "2026-11-27T02:29:21Z");
        assert_eq!(utc_ms(1_795_746_561_007), "2026-11-27T02:29:21.007Z");
        // Beyond what a date can say, the number is shown as it is.
        assert_eq!(utc(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn spans_show_the_two_largest_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(42), "42s");
        assert_eq!(span(200), "3m 20s");
        assert_eq!(span(30 * 86_400 - 10), "29d 23h");
        assert_eq!(span(86_400 + 5), "1d");
        assert_eq!(span(3_600), "1h");
        assert_eq!(expiry(100, 40), "in 1m");
        assert_eq!(expiry(100, 100), "expired 0s ago");
        assert_eq!(expiry(100, 3_700), "expired 1h ago");
    }

    #[test]
    fn counts_and_sizes() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(3, "file"), "3 files");
        assert_eq!(size(3), "3 B");
        assert_eq!(size(32 << 20), "32.00 MiB");
        assert_eq!(amount(1), "1 byte");
        assert_eq!(amount(1023), "1023 bytes");
        assert_eq!(amount(32 << 20), "32.00 MiB (33554432 bytes)");
    }
}

/// Text safe to print on a terminal: control characters (but newline and
/// tab), bidirectional formatting, invisible and line or paragraph
/// separator characters are shown as `\u{…}` escapes, so text a server or another
/// user chose (names, reasons, error messages) cannot move the cursor,
/// recolour the terminal or reorder what a line seems to say.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| (c.is_control() && c != '\n' && c != '\t') || vault_manifest::is_deceptive(c);
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod terminal_tests {
    use super::terminal_safe;

    #[test]
    fn escapes_what_could_spoof_a_terminal() {
        assert_eq!(terminal_safe("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(
            terminal_safe("\u{1b}[2Jhr/\u{202e}lmth.exe\u{2028}x"),
            "\\u{001b}[2Jhr/\\u{202e}lmth.exe\\u{2028}x"
        );
    }
}
