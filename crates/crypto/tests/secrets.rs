//! Key types have no printable form (checked at compile time) and sealing
//! reports wrong secrets clearly.

use std::marker::PhantomData;
use vault_crypto::*;

/// `Probe::<T>::DEBUG` is true only when `T: Debug` (inherent constants win
/// over the blanket trait's).
struct Probe<T>(PhantomData<T>);
trait NoDebug {
    const DEBUG: bool = false;
}
impl<T> NoDebug for Probe<T> {}
impl<T: std::fmt::Debug> Probe<T> {
    #[allow(dead_code)]
    const DEBUG: bool = true;
}
struct DisplayProbe<T>(PhantomData<T>);
trait NoDisplay {
    const DISPLAY: bool = false;
}
impl<T> NoDisplay for DisplayProbe<T> {}
impl<T: std::fmt::Display> DisplayProbe<T> {
    #[allow(dead_code)]
    const DISPLAY: bool = true;
}

#[test]
fn key_types_cannot_be_printed() {
    // Checked at compile time: this test file does not build if a key type
    // gains `Debug` or `Display`.
    const { assert!(!Probe::<MasterKey>::DEBUG) };
    const { assert!(!Probe::<Dek>::DEBUG) };
    const { assert!(!Probe::<Keyring>::DEBUG) };
    const { assert!(!Probe::<Unsealer>::DEBUG) };
    const { assert!(!Probe::<Sealer>::DEBUG) };
    const { assert!(!DisplayProbe::<MasterKey>::DISPLAY) };
    const { assert!(!DisplayProbe::<Dek>::DISPLAY) };
    // The probe itself works.
    const { assert!(Probe::<u8>::DEBUG) };
}

#[test]
fn identity_seal_round_trip_and_wrong_identity() {
    let (secret, _public) = generate_identity();
    let unsealer = Unsealer::from_identity_file(secret.expose_secret()).unwrap();
    let master = MasterKey::generate().unwrap();
    let sealed = Sealer::for_unsealer(&unsealer).seal(&master).unwrap();
    assert!(String::from_utf8_lossy(&sealed).starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert_eq!(unsealer.unseal(&sealed).unwrap().expose(), master.expose());
    let (other, _) = generate_identity();
    let wrong = Unsealer::from_identity_file(other.expose_secret()).unwrap();
    let err = wrong.unseal(&sealed).err().unwrap().to_string();
    assert!(err.contains("wrong identity or passphrase"), "{err}");
    assert!(!err.contains(&hex::encode(master.expose())));
    assert!(Unsealer::from_identity_file("# nothing here\n").is_err());
    assert!(Unsealer::from_identity_file("AGE-SECRET-KEY-1NOTVALID").is_err());
}

#[test]
fn passphrase_seal_round_trip_and_wrong_passphrase() {
    let master = MasterKey::generate().unwrap();
    let sealed = Sealer::passphrase("correct horse".into())
        .seal(&master)
        .unwrap();
    let back = Unsealer::passphrase("correct horse".into())
        .unseal(&sealed)
        .unwrap();
    assert_eq!(back.expose(), master.expose());
    let err = Unsealer::passphrase("battery staple".into())
        .unseal(&sealed)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("wrong identity or passphrase"),
        "{err}"
    );
}

#[test]
fn error_messages_never_carry_key_bytes() {
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let dek = Dek::generate().unwrap();
    let ctx = EncryptionContext::new([1; 16], "ns", 0, sha256(b"")).unwrap();
    let mut w = ring.wrap_dek(&dek, &ctx).unwrap();
    w.ciphertext[0] ^= 1;
    let msg = ring.unwrap_dek(&w, &ctx).err().unwrap().to_string();
    for key in [master.expose(), dek.expose()] {
        assert!(!msg.contains(&hex::encode(key)), "{msg}");
    }
}
