//! `vault-policy` decides who may do what. It loads the Cedar schema and
//! policies of a `policies/` folder, validates them against the schema
//! (refusing an invalid set with file:line diagnostics), and answers
//! is-authorized for a principal, an [`Action`] and a [`Resource`].
//!
//! Start with [`PolicyEngine::load_dir`] (or [`PolicyEngine::defaults`]) and
//! the [`Authorize`] trait the server calls on every route.
//!
//! ```
//! use vault_policy::{Action, Authorize, PolicyEngine, PrincipalInfo, Resource};
//! let engine = PolicyEngine::defaults().unwrap();
//! let trainer = PrincipalInfo { name: "ci".into(), role: "trainer".into(), namespaces: vec!["fraud".into()] };
//! let model = Resource::Artifact { name: "fraud/m", namespace: "fraud", kind: "model", sensitivity: "" };
//! assert!(engine.decide(&trainer, Action::Push, &model, false.into()).allowed);
//! let other = Resource::Artifact { name: "ads/m", namespace: "ads", kind: "model", sensitivity: "" };
//! assert!(!engine.decide(&trainer, Action::Push, &other, false.into()).allowed);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
pub mod gates;

pub use engine::{Decision, Diagnostic, Error, PolicyEngine};
pub use gates::{Gate, Gates};

/// An operation the server authorizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Upload a new version.
    Push,
    /// Download file contents.
    Pull,
    /// Read a manifest (resolve a reference).
    Show,
    /// See that an artifact exists, in a listing.
    List,
    /// Move an alias.
    Alias,
    /// Delete a version.
    Delete,
    /// Run an anonymization job on a dataset.
    Anonymize,
    /// Read a job output that is not released yet; approve, reject or
    /// withdraw a release.
    Review,
    /// Read job state.
    JobRead,
    /// Manage publisher keys of a namespace.
    PublisherAdmin,
    /// Create, list and revoke tokens.
    TokenAdmin,
    /// Key ring status, rotation, rewrap, retirement.
    KeyAdmin,
    /// Read and verify the audit log.
    AuditRead,
    /// Reload policies.
    PolicyAdmin,
}

impl Action {
    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Show => "show",
            Action::List => "list",
            Action::Alias => "alias",
            Action::Delete => "delete",
            Action::Anonymize => "anonymize",
            Action::Review => "review",
            Action::JobRead => "job_read",
            Action::PublisherAdmin => "publisher_admin",
            Action::TokenAdmin => "token_admin",
            Action::KeyAdmin => "key_admin",
            Action::AuditRead => "audit_read",
            Action::PolicyAdmin => "policy_admin",
        }
    }

    /// Every action.
    pub const ALL: [Action; 14] = [
        Action::Push,
        Action::Pull,
        Action::Show,
        Action::List,
        Action::Alias,
        Action::Delete,
        Action::Anonymize,
        Action::Review,
        Action::JobRead,
        Action::PublisherAdmin,
        Action::TokenAdmin,
        Action::KeyAdmin,
        Action::AuditRead,
        Action::PolicyAdmin,
    ];

    fn on_artifact(self) -> bool {
        matches!(
            self,
            Action::Push
                | Action::Pull
                | Action::Show
                | Action::List
                | Action::Alias
                | Action::Delete
                | Action::Anonymize
                | Action::Review
        )
    }
}

/// The caller, from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalInfo {
    /// Principal name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Namespaces the token is scoped to.
    pub namespaces: Vec<String>,
}

/// What an action is about.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// An artifact (it may not exist yet: `kind` is then "").
    Artifact {
        /// Full name.
        name: &'a str,
        /// First segment.
        namespace: &'a str,
        /// "model", "dataset" or "".
        kind: &'a str,
        /// Sensitivity label or "".
        sensitivity: &'a str,
    },
    /// A namespace.
    Namespace(&'a str),
    /// A server-wide resource: "keys", "tokens", "policies", "audit", "jobs".
    Service(&'a str),
}

impl std::fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Artifact { name, .. } => f.write_str(name),
            Resource::Namespace(n) => write!(f, "namespace {n}"),
            Resource::Service(s) => f.write_str(s),
        }
    }
}

/// The context of an artifact action (`context` in policies).
#[derive(Clone, Copy, Debug, Default)]
pub struct ArtifactContext<'a> {
    /// The request named an alias (resolve), or the version downloaded is
    /// the target of an alias (download).
    pub via_alias: bool,
    /// The admission scan's verdict on the version the request reads
    /// (`pass`, `warn`, `unsupported`, `incomplete`, `fail`; `none` for a
    /// version pushed before scans), or `""` when the request concerns no
    /// one version (listing, resolving, pushing).
    pub scan: &'a str,
    /// For an alias move: the outcome of the promotion gate that guards
    /// the alias (`passed`, `failed`; `none` when no gate guards it);
    /// `""` for every other request.
    pub gate: &'a str,
}

impl From<bool> for ArtifactContext<'static> {
    /// The context of a request about no one version.
    fn from(via_alias: bool) -> Self {
        Self {
            via_alias,
            scan: "",
            gate: "",
        }
    }
}

/// The decision interface the server depends on; [`PolicyEngine`] is the
/// Cedar implementation.
pub trait Authorize: Send + Sync {
    /// Decide one request; `ctx` is the context of artifact actions
    /// (ignored for others).
    fn decide(
        &self,
        principal: &PrincipalInfo,
        action: Action,
        resource: &Resource<'_>,
        ctx: ArtifactContext<'_>,
    ) -> Decision;
}
