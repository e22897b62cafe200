//! Promotion gates: the evidence an alias such as `production` needs
//! before it may point at a version, declared in `policies/gates.toml`
//! and validated with the Cedar policies (an invalid file refuses the
//! whole set). The server evaluates a gate when an alias moves and passes
//! the outcome to Cedar as `context.gate`.
//!
//! ```toml
//! [[gate]]
//! alias = "production"
//! namespaces = ["*"]            # or a list of namespaces
//! scan = ["pass"]               # admission verdicts accepted
//! approvals = 1                 # distinct approvers, never the pusher
//! approver_roles = ["steward"]
//!
//! [[gate.evidence]]
//! predicate_type = "https://in-toto.io/attestation/test-result/v0.1"
//! attestor = "adversarial-eval"
//! result = ["PASSED"]
//! max_age = "14d"
//! ```

use serde::{Deserialize, Serialize};

use crate::Diagnostic;

/// The file a policy folder declares its gates in.
pub const GATES_FILE: &str = "gates.toml";

/// The in-toto test-result predicate type.
pub const TEST_RESULT: &str = "https://in-toto.io/attestation/test-result/v0.1";

/// The predicate type of an approval by a person's token.
pub const APPROVAL: &str = "https://mlvault.dev/approval/v1";

const VERDICTS: [&str; 4] = ["pass", "warn", "unsupported", "incomplete"];
const RESULTS: [&str; 2] = ["PASSED", "WARNED"];
const MAX_APPROVALS: u32 = 16;
const MAX_GATES: usize = 256;
const MAX_EVIDENCE: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    gate: Vec<RawGate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    alias: String,
    namespaces: Vec<String>,
    #[serde(default)]
    scan: Vec<String>,
    #[serde(default)]
    approvals: u32,
    #[serde(default)]
    approver_roles: Vec<String>,
    #[serde(default)]
    approval_max_age: Option<String>,
    #[serde(default)]
    evidence: Vec<RawEvidence>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvidence {
    predicate_type: String,
    #[serde(default)]
    attestor: Option<String>,
    #[serde(default)]
    result: Option<Vec<String>>,
    #[serde(default)]
    max_age: Option<String>,
}

/// One gate, normalized: what its digest is computed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gate {
    /// The alias it guards.
    pub alias: String,
    /// Namespaces it applies to, sorted; `["*"]` is every namespace.
    pub namespaces: Vec<String>,
    /// Admission verdicts accepted, sorted (empty: any).
    pub scan: Vec<String>,
    /// Distinct approvals needed, none by the principal that pushed.
    pub approvals: u32,
    /// Roles whose approvals count, sorted (empty: any).
    pub approver_roles: Vec<String>,
    /// Approvals older than this many seconds do not count.
    pub approval_max_age: Option<u64>,
    /// Attestations needed.
    pub evidence: Vec<Evidence>,
}

/// One kind of attestation a gate needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Its predicate type.
    pub predicate_type: String,
    /// The attestor that must have signed it (any trusted one when absent).
    pub attestor: Option<String>,
    /// For test results: the results accepted (of the newest one).
    pub result: Vec<String>,
    /// Older than this many seconds (since the vault accepted it) does not count.
    pub max_age: Option<u64>,
}

impl Gate {
    /// Whether this gate guards `alias` in `namespace`.
    pub fn applies(&self, namespace: &str, alias: &str) -> bool {
        self.alias == alias && self.namespaces.iter().any(|n| n == "*" || n == namespace)
    }

    /// `sha256:<hex>` of the gate's canonical JSON: what an alias record
    /// granted on it names.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let d = ring::digest::digest(&ring::digest::SHA256, &json);
        format!("sha256:{}", hex::encode(d.as_ref()))
    }

    /// What the gate needs, in words.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.scan.is_empty() {
            out.push(format!("admission scan verdict {}", self.scan.join(" or ")));
        }
        for e in &self.evidence {
            out.push(e.describe());
        }
        if self.approvals > 0 {
            let mut s = format!(
                "{} approval(s) by principals other than the pusher",
                self.approvals
            );
            if !self.approver_roles.is_empty() {
                s.push_str(&format!(" (role {})", self.approver_roles.join(" or ")));
            }
            if let Some(a) = self.approval_max_age {
                s.push_str(&format!(", at most {} old", age(a)));
            }
            out.push(s);
        }
        out
    }
}

impl Evidence {
    fn describe(&self) -> String {
        let mut s = format!("a `{}` attestation", self.predicate_type);
        if let Some(a) = &self.attestor {
            s.push_str(&format!(" by `{a}`"));
        }
        if !self.result.is_empty() {
            s.push_str(&format!(", result {}", self.result.join(" or ")));
        }
        if let Some(m) = self.max_age {
            s.push_str(&format!(", at most {} old", age(m)));
        }
        s
    }
}

/// Seconds as the largest whole unit (`14d`, `36h`, `90s`).
pub fn age(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// The validated gates of a policy folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gates {
    gates: Vec<Gate>,
}

impl Gates {
    /// The gate that guards `alias` in `namespace`, if one does (gates
    /// never overlap).
    pub fn for_alias(&self, namespace: &str, alias: &str) -> Option<&Gate> {
        self.gates.iter().find(|g| g.applies(namespace, alias))
    }

    /// Every gate.
    pub fn all(&self) -> &[Gate] {
        &self.gates
    }

    /// Parse and validate `text` (the file `file`); problems are
    /// diagnostics naming the file and, for syntax, the line.
    pub fn parse(file: &str, text: &str) -> Result<Self, Vec<Diagnostic>> {
        let raw: File = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((0, 0), |s| crate::engine::line_col(text, s.start));
            vec![Diagnostic {
                file: file.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }]
        })?;
        let mut diags = Vec::new();
        let mut gates = Vec::new();
        if raw.gate.len() > MAX_GATES {
            diags.push(format!("more than {MAX_GATES} gates"));
        }
        for (i, g) in raw.gate.into_iter().enumerate() {
            let at = format!("gate {} (`{}`)", i + 1, g.alias.escape_debug());
            match normalize(g) {
                Ok(g) => gates.push(g),
                Err(e) => diags.extend(e.into_iter().map(|m| format!("{at}: {m}"))),
            }
        }
        for (i, a) in gates.iter().enumerate() {
            for b in &gates[i + 1..] {
                let overlap = a.alias == b.alias
                    && a.namespaces
                        .iter()
                        .any(|n| n == "*" || b.namespaces.iter().any(|m| m == "*" || m == n));
                if overlap {
                    diags.push(format!(
                        "two gates guard alias `{}` in the same namespace; one alias has one gate per namespace",
                        a.alias
                    ));
                }
            }
        }
        if diags.is_empty() {
            Ok(Gates { gates })
        } else {
            Err(diags
                .into_iter()
                .map(|message| Diagnostic {
                    file: file.to_owned(),
                    line: 0,
                    column: 0,
                    message,
                })
                .collect())
        }
    }
}

fn duration(what: &str, s: Option<String>, errs: &mut Vec<String>) -> Option<u64> {
    let s = s?;
    match vault_api::parse_duration(&s) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(format!("{what}: {e}"));
            None
        }
    }
}

fn normalize(g: RawGate) -> Result<Gate, Vec<String>> {
    let mut errs = Vec::new();
    if !vault_api::is_valid_alias(&g.alias) {
        errs.push("`alias` is not a valid alias".into());
    }
    let mut namespaces = g.namespaces;
    namespaces.sort();
    namespaces.dedup();
    if namespaces.is_empty() {
        errs.push("`namespaces` is empty: name namespaces, or `[\"*\"]` for all".into());
    }
    for n in &namespaces {
        let valid = !n.contains('/') && vault_api::ArtifactName::try_from(format!("{n}/x")).is_ok();
        if n != "*" && !valid {
            errs.push(format!("`{}` is not a namespace", n.escape_debug()));
        }
    }
    if namespaces.len() > 1 && namespaces.iter().any(|n| n == "*") {
        errs.push("`*` already names every namespace".into());
    }
    let mut scan = g.scan;
    scan.sort();
    scan.dedup();
    for s in &scan {
        if !VERDICTS.contains(&s.as_str()) {
            errs.push(format!(
                "scan verdict `{}` cannot be accepted (one of {})",
                s.escape_debug(),
                VERDICTS.join(", ")
            ));
        }
    }
    if g.approvals > MAX_APPROVALS {
        errs.push(format!("at most {MAX_APPROVALS} approvals"));
    }
    let mut approver_roles = g.approver_roles;
    approver_roles.sort();
    approver_roles.dedup();
    if approver_roles.iter().any(|r| r.trim().is_empty()) {
        errs.push("an approver role is empty".into());
    }
    if g.approvals == 0 && (!approver_roles.is_empty() || g.approval_max_age.is_some()) {
        errs.push("`approver_roles` and `approval_max_age` need `approvals` ≥ 1".into());
    }
    let approval_max_age = duration("approval_max_age", g.approval_max_age, &mut errs);
    if g.evidence.len() > MAX_EVIDENCE {
        errs.push(format!("at most {MAX_EVIDENCE} evidence entries"));
    }
    let mut evidence = Vec::new();
    for (i, e) in g.evidence.into_iter().enumerate() {
        let at = format!("evidence {}", i + 1);
        let pt = e.predicate_type;
        if pt.is_empty() || pt.len() > 512 || pt.chars().any(char::is_whitespace) {
            errs.push(format!("{at}: `predicate_type` must be a URI"));
        }
        if pt == APPROVAL {
            errs.push(format!(
                "{at}: approvals are required with `approvals`, not as evidence"
            ));
        }
        let result = match (pt == TEST_RESULT, e.result) {
            (true, None) => vec!["PASSED".to_owned()],
            (true, Some(mut r)) => {
                r.sort();
                r.dedup();
                if r.is_empty() {
                    errs.push(format!("{at}: `result` is empty"));
                }
                for x in &r {
                    if !RESULTS.contains(&x.as_str()) {
                        errs.push(format!(
                            "{at}: result `{}` cannot be accepted (PASSED or WARNED)",
                            x.escape_debug()
                        ));
                    }
                }
                r
            }
            (false, Some(_)) => {
                errs.push(format!(
                    "{at}: `result` applies only to the test-result predicate ({TEST_RESULT})"
                ));
                Vec::new()
            }
            (false, None) => Vec::new(),
        };
        if e.attestor.as_deref().is_some_and(|a| a.trim().is_empty()) {
            errs.push(format!("{at}: `attestor` is empty"));
        }
        let max_age = duration(&format!("{at}: max_age"), e.max_age, &mut errs);
        evidence.push(Evidence {
            predicate_type: pt,
            attestor: e.attestor,
            result,
            max_age,
        });
    }
    if scan.is_empty() && g.approvals == 0 && evidence.is_empty() {
        errs.push("the gate requires nothing (give `scan`, `approvals` or `evidence`)".into());
    }
    if errs.is_empty() {
        Ok(Gate {
            alias: g.alias,
            namespaces,
            scan,
            approvals: g.approvals,
            approver_roles,
            approval_max_age,
            evidence,
        })
    } else {
        Err(errs)
    }
}

/// One attestation kept about the version, as the gate sees it (its
/// signature already verified against the attestors trusted now).
#[derive(Clone, Debug)]
pub struct Fact {
    /// `sha256:` of the envelope.
    pub digest: String,
    /// Predicate type.
    pub predicate_type: String,
    /// The attestor that signed it (for an approval, the approver).
    pub attestor: String,
    /// Test result, if one.
    pub result: Option<String>,
    /// When the vault accepted it (epoch seconds).
    pub added: u64,
    /// For approvals: the approver's role.
    pub role: Option<String>,
}

/// What the version offers the gate.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// Principal that pushed the version.
    pub pusher: &'a str,
    /// Its admission verdict (`none` when it has none).
    pub scan: &'a str,
    /// `sha256:` of the verdict's envelope, when there is one.
    pub scan_digest: Option<&'a str>,
    /// Attestations and approvals kept about it.
    pub attestations: &'a [Fact],
    /// Now (epoch seconds).
    pub now: u64,
}

/// A gate's judgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Every requirement met.
    pub passed: bool,
    /// What is missing, in words (empty when passed).
    pub missing: Vec<String>,
    /// Digests of the envelopes it was granted on (scan verdict first).
    pub evidence: Vec<String>,
}

impl Gate {
    /// Judge `f` against this gate. For each kind of evidence the newest
    /// matching attestation decides: a FAILED run after a PASSED one on
    /// the same bytes refuses (and within the same second, FAILED wins).
    pub fn evaluate(&self, f: &Facts<'_>) -> Outcome {
        let mut missing = Vec::new();
        let mut evidence = Vec::new();
        if !self.scan.is_empty() {
            if self.scan.iter().any(|s| s == f.scan) {
                evidence.extend(f.scan_digest.map(str::to_owned));
            } else {
                missing.push(format!(
                    "an admission scan verdict of {} (it is `{}`)",
                    self.scan.join(" or "),
                    f.scan
                ));
            }
        }
        for e in &self.evidence {
            let matching = f.attestations.iter().filter(|a| {
                a.predicate_type == e.predicate_type
                    && e.attestor.as_ref().is_none_or(|w| *w == a.attestor)
            });
            // The newest decides; of several accepted in the same second,
            // one whose result is not accepted (fail closed).
            let accepted = |a: &Fact| {
                e.result.is_empty() || e.result.iter().any(|x| Some(x) == a.result.as_ref())
            };
            let newest = matching.max_by_key(|a| (a.added, !accepted(a)));
            let Some(a) = newest else {
                missing.push(e.describe());
                continue;
            };
            let old = f.now.saturating_sub(a.added);
            if let Some(m) = e.max_age.filter(|m| old > *m) {
                missing.push(format!(
                    "{}: the newest ({}) is {} old, more than {}",
                    e.describe(),
                    a.digest,
                    age(old),
                    age(m)
                ));
                continue;
            }
            if !e.result.is_empty() {
                let r = a.result.as_deref().unwrap_or("none");
                if !e.result.iter().any(|x| x == r) {
                    missing.push(format!(
                        "{}: the newest ({} by `{}`) says {r}",
                        e.describe(),
                        a.digest,
                        a.attestor
                    ));
                    continue;
                }
            }
            evidence.push(a.digest.clone());
        }
        if self.approvals > 0 {
            let mut approvers: Vec<&Fact> = Vec::new();
            for a in f
                .attestations
                .iter()
                .filter(|a| a.predicate_type == APPROVAL)
            {
                let role_ok = self.approver_roles.is_empty()
                    || a.role
                        .as_ref()
                        .is_some_and(|r| self.approver_roles.contains(r));
                let fresh = self
                    .approval_max_age
                    .is_none_or(|m| f.now.saturating_sub(a.added) <= m);
                let distinct =
                    a.attestor != f.pusher && !approvers.iter().any(|b| b.attestor == a.attestor);
                if role_ok && fresh && distinct {
                    approvers.push(a);
                }
            }
            approvers.sort_by_key(|a| std::cmp::Reverse(a.added));
            approvers.truncate(self.approvals as usize);
            if approvers.len() < self.approvals as usize {
                let mut s = format!(
                    "{} approval(s) by principals other than the pusher `{}`",
                    self.approvals, f.pusher
                );
                if !self.approver_roles.is_empty() {
                    s.push_str(&format!(" with role {}", self.approver_roles.join(" or ")));
                }
                if let Some(m) = self.approval_max_age {
                    s.push_str(&format!(", at most {} old", age(m)));
                }
                s.push_str(&format!(" (has {})", approvers.len()));
                missing.push(s);
            } else {
                evidence.extend(approvers.iter().map(|a| a.digest.clone()));
            }
        }
        Outcome {
            passed: missing.is_empty(),
            missing,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROD: &str = r#"
[[gate]]
alias = "production"
namespaces = ["*"]
scan = ["pass"]
approvals = 1
approver_roles = ["steward"]

[[gate.evidence]]
predicate_type = "https://in-toto.io/attestation/test-result/v0.1"
attestor = "adversarial-eval"
max_age = "14d"
"#;

    fn fact(pt: &str, by: &str, result: Option<&str>, added: u64) -> Fact {
        Fact {
            digest: format!("sha256:{by}{added}"),
            predicate_type: pt.into(),
            attestor: by.into(),
            result: result.map(str::to_owned),
            added,
            role: (pt == APPROVAL).then(|| "steward".to_owned()),
        }
    }

    #[test]
    fn the_production_gate_needs_each_piece_of_evidence() {
        let gates = Gates::parse("gates.toml", PROD).unwrap();
        let g = gates.for_alias("fraud", "production").unwrap();
        assert!(gates.for_alias("fraud", "staging").is_none());
        let day = 86_400;
        let now = 100 * day;
        let pass = fact(TEST_RESULT, "adversarial-eval", Some("PASSED"), now - day);
        let ok = fact(APPROVAL, "alice", None, now - day);
        let all = vec![pass.clone(), ok.clone()];
        let facts = |a: &[Fact]| {
            g.evaluate(&Facts {
                pusher: "ci",
                scan: "pass",
                scan_digest: Some("sha256:scan"),
                attestations: a,
                now,
            })
        };
        let out = facts(&all);
        assert!(out.passed, "{:?}", out.missing);
        assert_eq!(out.evidence.len(), 3);
        // Each requirement missing is named.
        let warn = g.evaluate(&Facts {
            pusher: "ci",
            scan: "warn",
            scan_digest: None,
            attestations: &all,
            now,
        });
        assert!(warn.missing[0].contains("it is `warn`"));
        let out = facts(std::slice::from_ref(&ok));
        assert!(
            out.missing[0].contains("adversarial-eval"),
            "{:?}",
            out.missing
        );
        let stale = fact(
            TEST_RESULT,
            "adversarial-eval",
            Some("PASSED"),
            now - 15 * day,
        );
        let out = facts(&[stale, ok.clone()]);
        assert!(
            out.missing[0].contains("15d old, more than 14d"),
            "{:?}",
            out.missing
        );
        let failed = fact(TEST_RESULT, "adversarial-eval", Some("FAILED"), now - 10);
        let same_second = fact(TEST_RESULT, "adversarial-eval", Some("PASSED"), now - 10);
        let out = facts(&[failed.clone(), same_second.clone(), ok.clone()]);
        assert!(out.missing[0].contains("says FAILED"), "{:?}", out.missing);
        let out = facts(&[same_second, failed.clone(), ok.clone()]);
        assert!(out.missing[0].contains("says FAILED"), "{:?}", out.missing);
        let out = facts(&[pass.clone(), failed, ok.clone()]);
        assert!(out.missing[0].contains("says FAILED"), "{:?}", out.missing);
        let other = fact(TEST_RESULT, "someone-else", Some("PASSED"), now);
        assert!(!facts(&[other, ok.clone()]).passed);
        let by_pusher = fact(APPROVAL, "ci", None, now);
        let out = facts(&[pass.clone(), by_pusher]);
        assert!(
            out.missing[0].contains("other than the pusher `ci`"),
            "{:?}",
            out.missing
        );
        let mut trainer = ok.clone();
        trainer.role = Some("trainer".into());
        assert!(!facts(&[pass, trainer]).passed);
    }

    #[test]
    fn the_digest_is_of_the_meaning_not_the_layout() {
        let a = Gates::parse("gates.toml", PROD).unwrap();
        let b = Gates::parse("gates.toml", &PROD.replace("\n\n", "\n# note\n\n")).unwrap();
        assert_eq!(a.all()[0].digest(), b.all()[0].digest());
        let c = Gates::parse("gates.toml", &PROD.replace("14d", "15d")).unwrap();
        assert_ne!(a.all()[0].digest(), c.all()[0].digest());
    }

    #[test]
    fn bad_files_are_refused_with_reasons() {
        let bad = |text: &str, says: &str| {
            let e = Gates::parse("gates.toml", text).expect_err(says);
            let all: Vec<String> = e.iter().map(ToString::to_string).collect();
            assert!(all.iter().any(|d| d.contains(says)), "{all:?} lacks {says}");
        };
        bad(
            "[[gate]]\nalias = \"production\"\nnamespace = [\"*\"]\n",
            "gates.toml:3:",
        );
        bad(
            "[[gate]]\nalias = \"production\"\nnamespaces = [\"*\"]\n",
            "requires nothing",
        );
        bad(&PROD.replace("14d", "14w"), "unknown unit");
        bad(
            &PROD.replace("[\"pass\"]", "[\"fail\"]"),
            "cannot be accepted",
        );
        bad(&PROD.replace("\"*\"", "\"Bad NS\""), "not a namespace");
        bad(
            &format!("{PROD}\n{}", PROD.replace("\"*\"", "\"fraud\"")),
            "two gates",
        );
        bad(
            &PROD.replace("max_age = \"14d\"", "result = [\"FAILED\"]"),
            "result `FAILED`",
        );
        bad(
            &PROD.replace("test-result/v0.1\"", "x/v1\"\nresult = [\"PASSED\"]"),
            "only to the test-result",
        );
        assert!(Gates::parse("gates.toml", "").unwrap().all().is_empty());
    }
}
