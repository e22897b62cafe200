//! `vault-server policy check DIR`: validate a policy folder (and its
//! promotion gates, listed with their digests) offline, as
//! `run` and a reload would. (The policy engine stays out of `vault-cli`,
//! which deploy jobs install.)

use std::path::Path;

use anyhow::Result;

use crate::exit::{fail, ExitStatus};

pub fn check(dir: &Path, json: bool) -> Result<()> {
    match vault_policy::PolicyEngine::load_dir(dir) {
        Ok(e) => {
            let gates = e.gates().all();
            if json {
                let v = serde_json::json!({
                    "valid": true, "policies": e.len(), "dir": dir,
                    "gates": gates.iter().map(|g| serde_json::json!({
                        "alias": g.alias, "namespaces": g.namespaces,
                        "digest": g.digest(), "requires": g.describe(),
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{}: {} policies, valid against the schema; {} promotion gate(s)",
                    dir.display(),
                    e.len(),
                    gates.len()
                );
                for g in gates {
                    println!(
                        "gate `{}` in {} ({}):",
                        g.alias,
                        g.namespaces.join(", "),
                        g.digest()
                    );
                    for r in g.describe() {
                        println!("  requires {r}");
                    }
                }
            }
            Ok(())
        }
        Err(vault_policy::Error::Invalid(diags)) => {
            if json {
                let v = serde_json::json!({
                    "valid": false,
                    "diagnostics": diags.iter().map(|d| serde_json::json!({
                        "file": d.file, "line": d.line, "column": d.column, "message": d.message,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for d in &diags {
                    eprintln!("{d}");
                }
            }
            Err(fail(
                ExitStatus::Failure,
                format!(
                    "{}: {} problem(s); policies not valid",
                    dir.display(),
                    diags.len()
                ),
            ))
        }
        Err(e) => Err(fail(ExitStatus::Failure, e.to_string())),
    }
}
