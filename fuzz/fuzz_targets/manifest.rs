//! The DSSE envelope / in-toto manifest parser, signature verification and
//! signed alias records, on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_manifest::{parse_envelope, Envelope, SecretKey, SignedAlias};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let trusted = [SecretKey::from_bytes(&[5u8; 32]).public()];
    if let Ok(env) = Envelope::from_json(text) {
        // Serializing and parsing again gives the same envelope.
        let again = Envelope::from_json(&env.to_json()).expect("own JSON parses");
        assert_eq!(again.to_json(), env.to_json());
        let _ = env.pae();
        let _ = env.verify_any(&trusted);
    }
    if let Ok((_, m)) = parse_envelope(text) {
        // The canonical payload of a parsed manifest parses to the same one.
        let env = m.to_envelope();
        let (_, again) = parse_envelope(&env.to_json()).expect("canonical manifest parses");
        assert_eq!(again.payload(), m.payload());
        let _ = m.total_bytes();
    }
    if let Ok(a) = serde_json::from_str::<SignedAlias>(text) {
        let _ = a.verify(&trusted);
    }
});
