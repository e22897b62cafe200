//! The wire and process contract that docs/cli.md publishes: exit codes,
//! HTTP statuses per error code, name and digest rules. Clients in other
//! languages depend on these numbers and strings, so each is pinned here.

use vault_api::{valid_digest, ArtifactName, ErrorCode, ExitStatus, Kind, Reference, Selector};

#[test]
fn exit_codes_are_the_documented_numbers() {
    let table = [
        (ExitStatus::Ok, 0),
        (ExitStatus::Failure, 1),
        (ExitStatus::Usage, 2),
        (ExitStatus::Auth, 3),
        (ExitStatus::NotFound, 4),
        (ExitStatus::Integrity, 5),
        (ExitStatus::RateLimited, 6),
        (ExitStatus::Unavailable, 7),
    ];
    for (status, code) in table {
        assert_eq!(status.code(), code, "{status:?}");
    }
}

#[test]
fn every_error_code_has_its_http_status() {
    let table = [
        (ErrorCode::BadRequest, 400),
        (ErrorCode::Unauthenticated, 401),
        (ErrorCode::Forbidden, 403),
        (ErrorCode::NotFound, 404),
        (ErrorCode::Conflict, 409),
        (ErrorCode::Integrity, 422),
        (ErrorCode::TooLarge, 413),
        (ErrorCode::RateLimited, 429),
        (ErrorCode::Unavailable, 503),
        (ErrorCode::Internal, 500),
    ];
    for (code, status) in table {
        assert_eq!(code.status(), status, "{code:?}");
    }
}

#[test]
fn kinds_are_named_as_on_the_wire() {
    assert_eq!(Kind::Model.as_str(), "model");
    assert_eq!(Kind::Dataset.as_str(), "dataset");
}

#[test]
fn a_name_is_at_most_200_bytes_and_keeps_its_text() {
    let ok = format!("ns/{}", "a".repeat(197));
    assert_eq!(ok.len(), 200);
    let name: ArtifactName = ok.parse().expect("200 bytes is allowed");
    assert_eq!(name.namespace(), "ns");
    assert_eq!(String::from(name), ok);
    let long = format!("ns/{}", "a".repeat(198));
    assert!(long.parse::<ArtifactName>().is_err(), "201 bytes");
    let deep: ArtifactName = "team/group/model".parse().unwrap();
    assert_eq!(deep.namespace(), "team");
}

#[test]
fn a_digest_is_sha256_and_exactly_64_lowercase_hex_digits() {
    let hex = "0123456789abcdef".repeat(4);
    assert!(valid_digest(&format!("sha256:{hex}")));
    for bad in [
        format!("sha256:{}", &hex[..63]),
        format!("sha256:{hex}0"),
        "sha256:abc".to_owned(),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}g", &hex[..63]),
        format!("sha512:{hex}"),
        hex.clone(),
    ] {
        assert!(!valid_digest(&bad), "{bad}");
    }
    let r: Reference = format!("ns/m@sha256:{hex}").parse().unwrap();
    assert_eq!(r.selector, Selector::Digest(format!("sha256:{hex}")));
    assert!(format!("ns/m@sha256:{}", &hex[..10])
        .parse::<Reference>()
        .is_err());
}
