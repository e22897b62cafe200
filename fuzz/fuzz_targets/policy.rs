//! The Cedar policy loader: arbitrary text as a policy file under the shipped
//! schema, or (first byte 0) as the schema under the shipped policies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_policy::PolicyEngine;

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const ROLES: &str = include_str!("../../policies/roles.cedar");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(schema) = text.strip_prefix('\0') {
        let _ = PolicyEngine::from_sources(schema, &[("roles.cedar".into(), ROLES.into())]);
    } else {
        let _ = PolicyEngine::from_sources(SCHEMA, &[("fuzz.cedar".into(), text.into())]);
    }
});
