//! Reference, artifact-name, manifest-path and duration parsers. A parsed
//! reference prints back to text that parses to the same reference.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_api::{ArtifactName, Reference};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = text.parse::<Reference>() {
        let printed = r.to_string();
        let again: Reference = printed.parse().expect("printed reference parses");
        assert_eq!(again, r);
        assert!(!r
            .name
            .as_str()
            .split('/')
            .any(|g| g.is_empty() || g == "." || g == ".."));
    }
    if let Ok(n) = text.parse::<ArtifactName>() {
        assert_eq!(n.as_str(), text);
        assert!(!n.namespace().is_empty());
    }
    if vault_manifest::validate_path(text).is_ok() {
        assert!(!text.starts_with('/'));
        assert!(!text
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty()));
    }
    let _ = vault_api::valid_digest(text);
    let _ = vault_api::is_valid_alias(text);
    let _ = vault_api::parse_duration(text);
});
