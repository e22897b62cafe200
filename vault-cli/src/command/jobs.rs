//! anonymize and job commands.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use vault_client::Client;

use super::{output, Exit};
use crate::cli::{AnonymizeArgs, Global, JobCommand};

fn summary(j: &Value) -> String {
    let s = |k: &str| j[k].as_str().unwrap_or("").to_owned();
    let mut out = format!(
        "{}  {:<9} {} → {}  rows {}",
        s("id"),
        s("state"),
        s("source"),
        j["output"].as_str().unwrap_or(&s("target")),
        j["rows"]
    );
    if let Some(e) = j["error"].as_str() {
        out.push_str(&format!("\n  error: {e}"));
    }
    let review = &j["review"];
    if let Some(state) = review["state"].as_str() {
        out.push_str(&format!("\n  release: {state}"));
        if let Some(by) = review["by"].as_str().filter(|b| !b.is_empty()) {
            out.push_str(&format!(" by {by}"));
        }
        if let Some(r) = review["reason"].as_str().filter(|r| !r.is_empty()) {
            out.push_str(&format!(" ({r})"));
        }
        if state == "pending" {
            out.push_str(" — only reviewers can read it until `vault-cli job approve`");
        }
    }
    if let Some(r) = j.get("report").filter(|r| !r.is_null()) {
        out.push_str(&format!(
            "\n  rows read {}, written {}, suppressed {}, malformed {}",
            r["rows_read"], r["rows_written"], r["rows_suppressed"], r["malformed_rows"]
        ));
        if !r["k_before"].is_null() {
            out.push_str(&format!(
                "\n  k {} → {}, l {} → {}, classes {} → {}, suppressed {:.1}%",
                r["k_before"],
                r["k_after"],
                r["l_before"],
                r["l_after"],
                r["classes_before"],
                r["classes_after"],
                r["suppressed_share"].as_f64().unwrap_or(0.0) * 100.0
            ));
        }
        for (label, key) in [("input", "risk_before"), ("output", "risk_after")] {
            let risk = &r[key];
            if risk.is_object() {
                out.push_str(&format!(
                    "\n  re-identification risk of the {label}: {:.2}% of records in classes below k, highest {:.4}, average {:.4}",
                    risk["records_below_k"].as_f64().unwrap_or(0.0) * 100.0,
                    risk["highest"].as_f64().unwrap_or(0.0),
                    risk["average"].as_f64().unwrap_or(0.0)
                ));
            }
        }
        if let Some(d) = r["unlisted_dropped"].as_array().filter(|d| !d.is_empty()) {
            let names: Vec<&str> = d.iter().filter_map(Value::as_str).collect();
            out.push_str(&format!(
                "\n  unlisted columns dropped: {}",
                names.join(", ")
            ));
        }
        if let Some(n) = r["identifier_values"].as_u64().filter(|n| *n > 0) {
            out.push_str(&format!(
                "\n  identifier values removed from free text: {n} distinct"
            ));
        }
        if let Some(c) = r["changed"].as_object() {
            for (col, m) in c {
                out.push_str(&format!("\n  {col}: {m}"));
            }
        }
        if let Some(p) = r["pii_found"].as_object().filter(|p| !p.is_empty()) {
            out.push_str(&format!("\n  PII scrubbed: {}", Value::Object(p.clone())));
        }
        match r["scan_findings"]
            .as_object()
            .filter(|_| r["scanned"] == true)
        {
            Some(f) if !f.is_empty() => {
                out.push_str("\n  scan: PII still found in the output:");
                for (col, m) in f {
                    out.push_str(&format!("\n    {col}: {m}"));
                }
            }
            Some(_) => out.push_str("\n  scan: no PII found in the output"),
            None => {}
        }
        if let Some(w) = r["warnings"].as_array() {
            for w in w.iter().filter_map(Value::as_str) {
                out.push_str(&format!("\n  warning: {w}"));
            }
        }
    }
    out
}

async fn wait(c: &Client, id: &str) -> Result<Value> {
    loop {
        let j = c.job_status(id).await?;
        match j["state"].as_str() {
            Some("succeeded") | Some("failed") => return Ok(j),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

fn finish(g: &Global, j: &Value) -> Result<()> {
    output(g, j, || summary(j))?;
    if j["state"] == "failed" {
        return Err(Exit {
            status: super::ExitStatus::Failure,
            message: format!("job {} failed", j["id"].as_str().unwrap_or("")),
        }
        .into());
    }
    Ok(())
}

pub async fn anonymize(g: &Global, c: &Client, a: AnonymizeArgs) -> Result<()> {
    let spec = std::fs::read_to_string(&a.spec)
        .with_context(|| format!("cannot read spec `{}`", a.spec.display()))?;
    super::parse_ref(&a.reference)?;
    let job = c
        .job_create(&vault_api::JobRequest {
            source: a.reference,
            target: a.to,
            spec,
        })
        .await?;
    let id = job["id"].as_str().unwrap_or("").to_owned();
    if !a.wait {
        if g.json {
            outln!("{}", serde_json::to_string_pretty(&job)?);
        } else {
            outln!("{id}");
        }
        return Ok(());
    }
    finish(g, &wait(c, &id).await?)
}

pub async fn job(g: &Global, c: &Client, j: JobCommand) -> Result<()> {
    match j {
        JobCommand::Status { id } => {
            let j = c.job_status(&id).await?;
            output(g, &j, || summary(&j))
        }
        JobCommand::List => {
            let l = c.job_list().await?;
            output(g, &l, || {
                l.as_array()
                    .map(|a| a.iter().map(summary).collect::<Vec<_>>().join("\n"))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "no jobs".into())
            })
        }
        JobCommand::Wait { id } => finish(g, &wait(c, &id).await?),
        JobCommand::Approve { id, reason } => review(g, c, &id, "approve", &reason).await,
        JobCommand::Reject { id, reason } => review(g, c, &id, "reject", &reason).await,
        JobCommand::Withdraw { id, reason } => review(g, c, &id, "withdraw", &reason).await,
    }
}

async fn review(g: &Global, c: &Client, id: &str, decision: &str, reason: &str) -> Result<()> {
    let j = c.job_review(id, decision, reason).await?;
    output(g, &j, || summary(&j))
}
