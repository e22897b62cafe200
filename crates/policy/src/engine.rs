//! The Cedar policy engine.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::gates::{Gates, GATES_FILE};
use crate::{Action, ArtifactContext, Authorize, PrincipalInfo, Resource};

/// Default policy files, compiled in from the repository's `policies/`.
const DEFAULT_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");
const DEFAULT_POLICIES: &[(&str, &str)] = &[
    ("roles.cedar", include_str!("../../../policies/roles.cedar")),
    (
        "guards.cedar",
        include_str!("../../../policies/guards.cedar"),
    ),
];
const DEFAULT_GATES: &str = include_str!("../../../policies/gates.toml");
const SCHEMA_FILE: &str = "schema.cedarschema";

/// One problem found in a policy folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name within the folder.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// Why a policy folder was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read `{path}`: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause, part of the message (not a `source()`, so that a
        /// printed error chain does not say it twice).
        cause: std::io::Error,
    },
    /// The schema or policies are invalid.
    #[error("invalid policy set:\n{}", .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allowed?
    pub allowed: bool,
    /// Ids of the policies that decided (the permits, or the forbids).
    pub reasons: Vec<String>,
}

/// A validated schema and policy set, and the promotion gates.
pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    count: usize,
    gates: Gates,
}

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn diag(file: &str, text: &str, d: &dyn miette::Diagnostic, fallback: String) -> Diagnostic {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let (line, column) = offset.map_or((0, 0), |o| line_col(text, o));
    let mut message = fallback;
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

fn type_name(s: &str) -> EntityTypeName {
    // The names are constants of this module and always parse.
    #[allow(clippy::expect_used)]
    EntityTypeName::from_str(s).expect("valid entity type name")
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(ty), EntityId::new(id))
}

impl PolicyEngine {
    /// The defaults shipped in `policies/`.
    pub fn defaults() -> Result<Self, Error> {
        let files: Vec<(String, String)> = DEFAULT_POLICIES
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        Self::from_parts(DEFAULT_SCHEMA, &files, Some(DEFAULT_GATES))
    }

    /// Load `DIR/schema.cedarschema`, every `DIR/*.cedar` and, when
    /// present, the promotion gates of `DIR/gates.toml`.
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|cause| Error::Io {
                path: p.to_path_buf(),
                cause,
            })
        };
        let schema = read(&dir.join(SCHEMA_FILE))?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|cause| Error::Io {
                path: dir.to_path_buf(),
                cause,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect();
        names.sort();
        let mut files = Vec::new();
        for p in names {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, read(&p)?));
        }
        let gates_path = dir.join(GATES_FILE);
        let gates = match std::fs::symlink_metadata(&gates_path) {
            Ok(_) => Some(read(&gates_path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(cause) => {
                return Err(Error::Io {
                    path: gates_path,
                    cause,
                })
            }
        };
        Self::from_parts(&schema, &files, gates.as_deref())
    }

    /// Build from a schema text and (file name, policy text) pairs, with
    /// no promotion gates.
    pub fn from_sources(schema_text: &str, files: &[(String, String)]) -> Result<Self, Error> {
        Self::from_parts(schema_text, files, None)
    }

    /// Build from a schema text, (file name, policy text) pairs and the
    /// text of a `gates.toml`, if any.
    pub fn from_parts(
        schema_text: &str,
        files: &[(String, String)],
        gates_text: Option<&str>,
    ) -> Result<Self, Error> {
        let mut diags = Vec::new();
        let gates = match gates_text.map(|t| Gates::parse(GATES_FILE, t)) {
            None => Gates::default(),
            Some(Ok(g)) => g,
            Some(Err(d)) => {
                diags.extend(d);
                Gates::default()
            }
        };
        let schema = match Schema::from_cedarschema_str(schema_text) {
            Ok((s, _warnings)) => Some(s),
            Err(e) => {
                diags.push(diag(SCHEMA_FILE, schema_text, &e, e.to_string()));
                None
            }
        };
        let mut policies = PolicySet::new();
        let mut origin: HashMap<String, (String, String)> = HashMap::new();
        let mut count = 0;
        if files.is_empty() {
            diags.push(Diagnostic {
                file: "(folder)".into(),
                line: 0,
                column: 0,
                message: "no .cedar policy files: every request would be denied".into(),
            });
        }
        for (name, text) in files {
            let set = match PolicySet::from_str(text) {
                Ok(s) => s,
                Err(e) => {
                    for d in e.iter() {
                        diags.push(diag(name, text, d, d.to_string()));
                    }
                    continue;
                }
            };
            if set.templates().next().is_some() {
                diags.push(Diagnostic {
                    file: name.clone(),
                    line: 0,
                    column: 0,
                    message: "policy templates are not supported".into(),
                });
            }
            for (i, p) in set.policies().enumerate() {
                let id = p
                    .annotation("id")
                    .map(|a| format!("{name}:{a}"))
                    .unwrap_or_else(|| format!("{name}#{i}"));
                origin.insert(id.clone(), (name.clone(), text.clone()));
                if let Err(e) = policies.add(p.new_id(PolicyId::new(&id))) {
                    diags.push(Diagnostic {
                        file: name.clone(),
                        line: 0,
                        column: 0,
                        message: e.to_string(),
                    });
                }
                count += 1;
            }
        }
        if let Some(schema) = &schema {
            let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
            for e in result.validation_errors() {
                let (file, text) = origin
                    .get(&e.policy_id().to_string())
                    .cloned()
                    .unwrap_or_default();
                diags.push(diag(
                    &file,
                    &text,
                    e,
                    format!("{e} (policy `{}`)", e.policy_id()),
                ));
            }
        }
        if let Some(schema) = &schema {
            // Every artifact action gets the scan verdict in its context: a
            // schema written before it would refuse every such request.
            let probe = Context::from_pairs([
                (
                    "via_alias".to_owned(),
                    RestrictedExpression::new_bool(false),
                ),
                (
                    "scan".to_owned(),
                    RestrictedExpression::new_string(String::new()),
                ),
                (
                    "gate".to_owned(),
                    RestrictedExpression::new_string(String::new()),
                ),
            ]);
            let fits = probe.is_ok_and(|c| {
                Request::new(
                    uid("Vault::Principal", "probe"),
                    uid("Vault::Action", Action::Pull.as_str()),
                    uid("Vault::Artifact", "probe/probe"),
                    c,
                    Some(schema),
                )
                .is_ok()
            });
            if !fits {
                diags.push(Diagnostic {
                    file: SCHEMA_FILE.into(),
                    line: 0,
                    column: 0,
                    message: "the artifact actions' context must be `{ via_alias: Bool, scan: String, gate: String }` (the admission scan verdict and the promotion gate's outcome; see the shipped policies/schema.cedarschema)".into(),
                });
            }
        }
        match (schema, diags.is_empty()) {
            (Some(schema), true) => Ok(Self {
                schema,
                policies,
                count,
                gates,
            }),
            _ => Err(Error::Invalid(diags)),
        }
    }

    /// The promotion gates in force.
    pub fn gates(&self) -> &Gates {
        &self.gates
    }

    /// Number of policies in force.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no policy is loaded (never for a valid engine).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn entities(
        &self,
        p: &PrincipalInfo,
        resource: &Resource<'_>,
    ) -> Result<(EntityUid, EntityUid, Entities), String> {
        let role = uid("Vault::Role", &p.role);
        let principal = uid("Vault::Principal", &p.name);
        let ns_set = RestrictedExpression::new_set(
            p.namespaces
                .iter()
                .map(|n| RestrictedExpression::new_string(n.clone())),
        );
        let mut list = vec![
            Entity::new(
                principal.clone(),
                HashMap::from([("namespaces".to_owned(), ns_set)]),
                HashSet::from([role.clone()]),
            )
            .map_err(|e| e.to_string())?,
            Entity::new_no_attrs(role, HashSet::new()),
        ];
        let res = match resource {
            Resource::Artifact {
                name,
                namespace,
                kind,
                sensitivity,
            } => {
                let ns = uid("Vault::Namespace", namespace);
                let art = uid("Vault::Artifact", name);
                list.push(Entity::new_no_attrs(ns.clone(), HashSet::new()));
                list.push(
                    Entity::new(
                        art.clone(),
                        HashMap::from([
                            (
                                "namespace".to_owned(),
                                RestrictedExpression::new_string((*namespace).to_owned()),
                            ),
                            (
                                "kind".to_owned(),
                                RestrictedExpression::new_string((*kind).to_owned()),
                            ),
                            (
                                "sensitivity".to_owned(),
                                RestrictedExpression::new_string((*sensitivity).to_owned()),
                            ),
                        ]),
                        HashSet::from([ns]),
                    )
                    .map_err(|e| e.to_string())?,
                );
                art
            }
            Resource::Namespace(n) => {
                let ns = uid("Vault::Namespace", n);
                list.push(Entity::new_no_attrs(ns.clone(), HashSet::new()));
                ns
            }
            Resource::Service(s) => {
                let sv = uid("Vault::Service", s);
                list.push(Entity::new_no_attrs(sv.clone(), HashSet::new()));
                sv
            }
        };
        let entities =
            Entities::from_entities(list, Some(&self.schema)).map_err(|e| e.to_string())?;
        Ok((principal, res, entities))
    }
}

impl Authorize for PolicyEngine {
    fn decide(
        &self,
        p: &PrincipalInfo,
        action: Action,
        resource: &Resource<'_>,
        ctx: ArtifactContext<'_>,
    ) -> Decision {
        let deny = |why: String| Decision {
            allowed: false,
            reasons: vec![why],
        };
        // An artifact action on a non-artifact (or the reverse) is denied.
        if action.on_artifact() != matches!(resource, Resource::Artifact { .. }) {
            let fits_ns =
                action == Action::PublisherAdmin && matches!(resource, Resource::Namespace(_));
            let fits_sv = !action.on_artifact()
                && action != Action::PublisherAdmin
                && matches!(resource, Resource::Service(_));
            if !(fits_ns || fits_sv) {
                return deny("action does not apply to this resource".into());
            }
        }
        let (principal, res, entities) = match self.entities(p, resource) {
            Ok(x) => x,
            Err(e) => return deny(e),
        };
        let context = if action.on_artifact() {
            Context::from_pairs([
                (
                    "via_alias".to_owned(),
                    RestrictedExpression::new_bool(ctx.via_alias),
                ),
                (
                    "scan".to_owned(),
                    RestrictedExpression::new_string(ctx.scan.to_owned()),
                ),
                (
                    "gate".to_owned(),
                    RestrictedExpression::new_string(ctx.gate.to_owned()),
                ),
            ])
        } else {
            Ok(Context::empty())
        };
        let context = match context {
            Ok(c) => c,
            Err(e) => return deny(e.to_string()),
        };
        let action_uid = uid("Vault::Action", action.as_str());
        let request = match Request::new(principal, action_uid, res, context, Some(&self.schema)) {
            Ok(r) => r,
            Err(e) => return deny(e.to_string()),
        };
        let answer = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        Decision {
            allowed: answer.decision() == cedar_policy::Decision::Allow,
            reasons: answer
                .diagnostics()
                .reason()
                .map(|r| r.to_string())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: &str, ns: &[&str]) -> PrincipalInfo {
        PrincipalInfo {
            name: format!("{role}-1"),
            role: role.into(),
            namespaces: ns.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn art<'a>(name: &'a str, kind: &'a str, sensitivity: &'a str) -> Resource<'a> {
        Resource::Artifact {
            name,
            namespace: name.split('/').next().unwrap_or_default(),
            kind,
            sensitivity,
        }
    }

    #[test]
    fn a_schema_without_the_scan_verdict_is_refused_and_deployers_need_a_pass() {
        let old = DEFAULT_SCHEMA.replace(
            "via_alias: Bool, scan: String, gate: String",
            "via_alias: Bool, scan: String",
        );
        assert_ne!(old, DEFAULT_SCHEMA);
        let files: Vec<(String, String)> = DEFAULT_POLICIES
            .iter()
            .filter(|(n, _)| *n != "guards.cedar")
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        let err = PolicyEngine::from_sources(&old, &files)
            .err()
            .expect("an old schema is refused")
            .to_string();
        assert!(err.contains("gate: String"), "{err}");

        let e = PolicyEngine::defaults().unwrap();
        let deployer = who("deployer", &["fraud"]);
        let trainer = who("trainer", &["fraud"]);
        let model = art("fraud/m", "model", "");
        let pull = |p: &PrincipalInfo, r: &Resource<'_>, scan: &str| {
            e.decide(
                p,
                Action::Pull,
                r,
                ArtifactContext {
                    via_alias: true,
                    scan,
                    gate: "",
                },
            )
            .allowed
        };
        assert!(pull(&deployer, &model, "pass"));
        for v in ["warn", "unsupported", "incomplete", "fail", "none", ""] {
            assert!(!pull(&deployer, &model, v), "deployer pulled a `{v}` model");
            assert!(pull(&trainer, &model, v), "trainer refused a `{v}` model");
        }
    }

    #[test]
    fn defaults_are_valid_and_least_privilege() {
        let e = PolicyEngine::defaults().unwrap();
        assert!(e.len() >= 6);
        let admin = who("admin", &[]);
        let trainer = who("trainer", &["fraud"]);
        let deployer = who("deployer", &["fraud"]);
        let steward = who("steward", &["fraud"]);
        let model = art("fraud/m", "model", "");
        let raw = art("fraud/customers", "dataset", "raw-pii");
        // A passing scan verdict: what these checks are about is roles.
        let ok = |p: &PrincipalInfo, a, r: &Resource<'_>, via_alias: bool| {
            let ctx = ArtifactContext {
                via_alias,
                scan: "pass",
                gate: "",
            };
            e.decide(p, a, r, ctx).allowed
        };
        assert!(!ok(&admin, Action::Pull, &model, false));
        assert!(ok(
            &admin,
            Action::KeyAdmin,
            &Resource::Service("keys"),
            false
        ));
        assert!(ok(&trainer, Action::Push, &model, false));
        assert!(!ok(
            &trainer,
            Action::Push,
            &art("ads/m", "model", ""),
            false
        ));
        assert!(!ok(
            &trainer,
            Action::KeyAdmin,
            &Resource::Service("keys"),
            false
        ));
        assert!(!ok(&deployer, Action::Pull, &model, false));
        assert!(ok(&deployer, Action::Pull, &model, true));
        assert!(!ok(&deployer, Action::Push, &model, true));
        assert!(!ok(&trainer, Action::Pull, &raw, false));
        assert!(ok(&steward, Action::Pull, &raw, false));
        assert!(ok(&trainer, Action::Push, &raw, false));
        // Wrong resource type for the action.
        assert!(!ok(&admin, Action::KeyAdmin, &model, false));
        // A gate that failed refuses every move of its alias; one that
        // passed, or no gate, leaves it to the roles.
        for who in [&admin, &trainer] {
            for (gate, allowed) in [("failed", false), ("passed", true), ("none", true)] {
                let ctx = ArtifactContext {
                    via_alias: false,
                    scan: "",
                    gate,
                };
                assert_eq!(e.decide(who, Action::Alias, &model, ctx).allowed, allowed);
            }
        }
        assert!(e.gates().for_alias("fraud", "production").is_some());
    }

    #[test]
    fn invalid_sets_name_file_and_line() {
        let files = vec![(
            "bad.cedar".to_owned(),
            "permit(principal, action, resource);\npermit(principal in Vault::Role::\"x\", action == Vault::Action::\"nope\", resource);\n".to_owned(),
        )];
        let err = PolicyEngine::from_sources(DEFAULT_SCHEMA, &files)
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("bad.cedar:2:"), "{text}");
        let syntax = vec![(
            "s.cedar".to_owned(),
            "permit(principal,\n action resource);".to_owned(),
        )];
        let text = PolicyEngine::from_sources(DEFAULT_SCHEMA, &syntax)
            .err()
            .unwrap()
            .to_string();
        assert!(text.contains("s.cedar:2:"), "{text}");
    }
}
