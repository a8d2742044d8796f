//! Declarative scenario suite (SPEC §10).
//!
//! Every `tests/scenarios/*.toml` file names a catalog, sets up tenant state through steps and
//! states the decisions it expects. This one runner plays each file twice:
//!
//! 1. [`scenarios_against_the_core`]: against the pure core — `resolve`, `decide` and `explain`
//!    on a `TenantState` built in memory. Admin steps become core `Command`s, checked by
//!    `Command::validate` and applied by `Command::apply` — the very functions the server runs;
//!    Stripe steps go through `billing::apply_subscription`, usage reports through
//!    `usage::validate_report`, `decide::usage_gate` and `usage::apply_report`.
//! 2. [`scenarios_against_the_server`]: against a real server started in-process on ephemeral
//!    TCP ports with a fresh SQLite file, driven through the generated tonic clients. Admin steps
//!    are `AdminService` RPCs (bearer token), checks are `Check`/`CheckBatch`, or `Explain` with
//!    `at` when the step evaluates at another time.
//!
//! Times are relative to `T0`: a fixed instant for the core (deterministic), the wall clock at
//! server start for the server path. The file format is described in `tests/scenarios/README.md`.
//! Any mismatch fails the test, naming the file, the step and what differed; so does a directory
//! without scenarios or a file that does not parse or validate.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use entitlements::billing::{self, Effect, SubscriptionFacts};
use entitlements::catalog::{Catalog, Edition, FeatureIdx, Interval, Value};
use entitlements::command::{self, Actor, Command, Invalid};
use entitlements::config::{EditionArg, ServeArgs};
use entitlements::decide::{Decision, Intent, Reason, Upgrade, UsageGate, decide, usage_gate};
use entitlements::explain::explain;
use entitlements::lifecycle::NoticeKind;
use entitlements::pb;
use entitlements::pb::admin_service_client::AdminServiceClient;
use entitlements::pb::entitlement_service_client::EntitlementServiceClient;
use entitlements::resolve::{PlanSource, ResolvedTenant, resolve};
use entitlements::server::{self, Running, load_catalog};
use entitlements::store::TrialExtension;
use entitlements::tenant::{
    AddOnGrant, DAY, GrantOrigin, Subscription, SubscriptionStatus, TenantState, UnixTime, validate_tenant_id,
};
use entitlements::usage::{self, Counter, CounterUpdate, UsageMode};
use serde::Deserialize;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// T0 of the core path: 2026-01-10T12:00:00Z, fixed so that the core run is deterministic.
const CORE_T0: UnixTime = 1_767_225_600 + 9 * DAY + DAY / 2;
const ADMIN_TOKEN: &str = "t";
const DEFAULT_ACTOR: &str = "scenario-runner";
const DEFAULT_TENANT: &str = "acme";
const DEFAULT_CATALOG: &str = "examples/catalog.toml";

// =============================================================================== file format

/// A time relative to T0: `"T0"`, `"T0+14d"`, `"T0-21d"`, `"T0+1d+2h"` (units d, h, m, s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rel(i64);

impl Rel {
    fn at(self, t0: UnixTime) -> UnixTime {
        t0 + self.0
    }
}

impl fmt::Display for Rel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("T0")?;
        if self.0 == 0 {
            return Ok(());
        }
        f.write_str(if self.0 < 0 { "-" } else { "+" })?;
        let mut rest = self.0.unsigned_abs();
        for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

fn parse_rel(src: &str) -> Result<i64, String> {
    let bad = |why: &str| format!("bad time `{src}`: {why} (write e.g. \"T0\", \"T0+14d\", \"T0-2h\")");
    let mut rest = src.trim().strip_prefix("T0").ok_or_else(|| bad("must start with T0"))?.trim_start();
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let sign = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return Err(bad("expected + or -")),
        };
        rest = rest[1..].trim_start();
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().map_err(|_| bad("expected a number"))?;
        let unit = match rest[digits..].chars().next() {
            Some('d') => DAY,
            Some('h') => 3600,
            Some('m') => 60,
            Some('s') => 1,
            _ => return Err(bad("expected a unit d, h, m or s")),
        };
        total = n.checked_mul(unit).and_then(|x| total.checked_add(sign * x)).ok_or_else(|| bad("overflow"))?;
        rest = rest[digits + 1..].trim_start();
    }
    Ok(total)
}

impl<'de> Deserialize<'de> for Rel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_rel(&s).map(Rel).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EditionName {
    Ee,
    Ce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum IntentArg {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum ModeArg {
    Delta,
    Set,
}

/// A step that fails on one path because of a known bug in `src/` (strict: the step must then
/// fail there; once it passes, the marker has to go). Printed in the summary, never silent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownBug {
    core: Option<String>,
    server: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Core,
    Server,
}

impl KnownBug {
    fn on(&self, path: PathKind) -> Option<&str> {
        match path {
            PathKind::Core => self.core.as_deref(),
            PathKind::Server => self.server.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// What the scenario shows (printed while running).
    #[serde(default)]
    description: String,
    /// Catalog file, relative to the crate root.
    #[serde(default = "default_catalog")]
    catalog: String,
    /// Deployment edition override (`"ce"` bypasses every gate).
    edition: Option<EditionName>,
    /// The tenant steps act on unless they name another.
    #[serde(default = "default_tenant")]
    tenant: String,
    /// Run only against the core (state the server cannot be given over gRPC yet).
    #[serde(default)]
    core_only: bool,
    #[serde(rename = "step", default)]
    steps: Vec<Step>,
}

fn default_catalog() -> String {
    DEFAULT_CATALOG.into()
}

fn default_tenant() -> String {
    DEFAULT_TENANT.into()
}

/// One `[[step]]`: a table with exactly one key naming the action.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Step {
    PutTenant(PutTenant),
    AssignPlan(AssignPlan),
    UnassignPlan(UnassignPlan),
    GrantAddon(GrantAddOn),
    RevokeAddon(RevokeAddOn),
    SetOverride(SetOverride),
    ClearOverride(ClearOverride),
    ExtendTrial(ExtendTrialStep),
    RecordUsage(RecordUsage),
    StripeSubscription(StripeSubscription),
    Check(CheckStep),
    CheckBatch(CheckBatch),
    Explain(ExplainStep),
    Usage(UsageStep),
}

/// Who makes an admin change, for which tenant, and whether it must be refused.
struct Meta<'a> {
    tenant: Option<&'a str>,
    actor: Option<&'a str>,
    rationale: Option<&'a str>,
    expect_error: Option<&'a str>,
    known_bug: Option<&'a KnownBug>,
}

/// An admin step: the common fields plus its own (serde's `flatten` cannot be combined with
/// `deny_unknown_fields`, and typos in scenario files must not pass silently).
macro_rules! admin_step {
    ($name:ident { $($(#[$attr:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            tenant: Option<String>,
            actor: Option<String>,
            rationale: Option<String>,
            expect_error: Option<String>,
            known_bug: Option<KnownBug>,
            $($(#[$attr])* $field: $ty,)*
        }

        impl $name {
            fn meta(&self) -> Meta<'_> {
                Meta {
                    tenant: self.tenant.as_deref(),
                    actor: self.actor.as_deref(),
                    rationale: self.rationale.as_deref(),
                    expect_error: self.expect_error.as_deref(),
                    known_bug: self.known_bug.as_ref(),
                }
            }
        }
    };
}

admin_step!(PutTenant {
    stripe_customer_id: Option<String>,
    trial_start: Option<Rel>,
    trial_end: Option<Rel>,
    archived: Option<bool>,
});
admin_step!(AssignPlan { plan: String, expires_at: Option<Rel> });
admin_step!(UnassignPlan {
    #[serde(default)]
    plan: String,
});
admin_step!(GrantAddOn { addon: String, quantity: Option<i64>, expires_at: Option<Rel> });
admin_step!(RevokeAddOn { addon: String });
admin_step!(SetOverride {
    feature: String,
    enabled: Option<bool>,
    number: Option<i64>,
    unlimited: Option<bool>,
    expires_at: Option<Rel>,
});
admin_step!(ClearOverride { feature: String });
admin_step!(ExtendTrialStep { days: Option<i64>, trial_end: Option<Rel> });

/// `RecordUsage` (data plane) with the expected outcome.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordUsage {
    tenant: Option<String>,
    feature: String,
    value: i64,
    mode: ModeArg,
    /// The idempotency key (required for DELTA).
    key: Option<String>,
    #[serde(default)]
    enforce: bool,
    expect_error: Option<String>,
    known_bug: Option<KnownBug>,
    applied: Option<bool>,
    duplicate: Option<bool>,
    used: Option<i64>,
    remaining: Option<i64>,
}

/// A Stripe subscription as the webhook would store it. Core only (no gRPC way to create one).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StripeSubscription {
    tenant: Option<String>,
    id: String,
    status: String,
    plan: Option<String>,
    interval: Option<Interval>,
    seats: Option<i64>,
    trial_end: Option<Rel>,
    current_period_start: Option<Rel>,
    current_period_end: Option<Rel>,
    #[serde(default)]
    cancel_at_period_end: bool,
    /// Add-ons bought as items of this subscription (one grant each, quantity 1).
    #[serde(default)]
    addons: Vec<String>,
}

/// A check and the decision it must produce. Absent expectations are not compared.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckStep {
    feature: String,
    tenant: Option<String>,
    /// Evaluate at this time (server: `Explain` with `at`, which decides WRITE × 1).
    at: Option<Rel>,
    intent: Option<IntentArg>,
    quantity: Option<i64>,
    expect_error: Option<String>,
    known_bug: Option<KnownBug>,
    allowed: Option<bool>,
    reason: Option<String>,
    source: Option<String>,
    upgrade: Option<String>,
    limit: Option<i64>,
    used: Option<i64>,
    remaining: Option<i64>,
    unlimited: Option<bool>,
    phase: Option<String>,
    plan: Option<String>,
    notices: Option<Vec<String>>,
    shadow_denial: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBatch {
    tenant: Option<String>,
    at: Option<Rel>,
    expect_error: Option<String>,
    known_bug: Option<KnownBug>,
    items: Vec<CheckStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainStep {
    tenant: Option<String>,
    at: Option<Rel>,
    expect_error: Option<String>,
    known_bug: Option<KnownBug>,
    known: Option<bool>,
    plan: Option<String>,
    plan_source: Option<String>,
    phase: Option<String>,
    notices: Option<Vec<String>>,
    trial_days_left: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageStep {
    tenant: Option<String>,
    feature: String,
    expect_error: Option<String>,
    known_bug: Option<KnownBug>,
    used: Option<i64>,
    limit: Option<i64>,
    remaining: Option<i64>,
    unlimited: Option<bool>,
}

impl Step {
    fn meta(&self) -> Option<Meta<'_>> {
        Some(match self {
            Step::PutTenant(s) => s.meta(),
            Step::AssignPlan(s) => s.meta(),
            Step::UnassignPlan(s) => s.meta(),
            Step::GrantAddon(s) => s.meta(),
            Step::RevokeAddon(s) => s.meta(),
            Step::SetOverride(s) => s.meta(),
            Step::ClearOverride(s) => s.meta(),
            Step::ExtendTrial(s) => s.meta(),
            _ => return None,
        })
    }

    fn expect_error(&self) -> Option<&str> {
        match self {
            Step::RecordUsage(s) => s.expect_error.as_deref(),
            Step::Check(s) => s.expect_error.as_deref(),
            Step::CheckBatch(s) => s.expect_error.as_deref(),
            Step::Explain(s) => s.expect_error.as_deref(),
            Step::Usage(s) => s.expect_error.as_deref(),
            Step::StripeSubscription(_) => None,
            other => other.meta().and_then(|m| m.expect_error),
        }
    }

    fn known_bug(&self) -> Option<&KnownBug> {
        match self {
            Step::RecordUsage(s) => s.known_bug.as_ref(),
            Step::Check(s) => s.known_bug.as_ref(),
            Step::CheckBatch(s) => s.known_bug.as_ref(),
            Step::Explain(s) => s.known_bug.as_ref(),
            Step::Usage(s) => s.known_bug.as_ref(),
            Step::StripeSubscription(_) => None,
            other => other.meta().and_then(|m| m.known_bug),
        }
    }

    /// A short label for failure messages.
    fn label(&self) -> String {
        match self {
            Step::PutTenant(_) => "put_tenant".into(),
            Step::AssignPlan(s) => format!("assign_plan {}", s.plan),
            Step::UnassignPlan(s) => format!("unassign_plan {}", s.plan),
            Step::GrantAddon(s) => format!("grant_addon {}", s.addon),
            Step::RevokeAddon(s) => format!("revoke_addon {}", s.addon),
            Step::SetOverride(s) => format!("set_override {}", s.feature),
            Step::ClearOverride(s) => format!("clear_override {}", s.feature),
            Step::ExtendTrial(_) => "extend_trial".into(),
            Step::RecordUsage(s) => format!("record_usage {} {:?} {}", s.feature, s.mode, s.value),
            Step::StripeSubscription(s) => format!("stripe_subscription {} ({})", s.id, s.status),
            Step::Check(s) => check_label("check", s, s.at),
            Step::CheckBatch(s) => {
                format!("check_batch of {}{}", s.items.len(), s.at.map(|a| format!(" at {a}")).unwrap_or_default())
            }
            Step::Explain(s) => format!("explain{}", s.at.map(|a| format!(" at {a}")).unwrap_or_default()),
            Step::Usage(s) => format!("usage {}", s.feature),
        }
    }

    /// How many expectations this step asserts (for the summary).
    fn assertions(&self) -> usize {
        match self {
            Step::CheckBatch(b) if b.expect_error.is_none() => b.items.len(),
            Step::StripeSubscription(_) => 0,
            Step::Check(_) | Step::Explain(_) | Step::Usage(_) | Step::CheckBatch(_) => 1,
            Step::RecordUsage(r) => usize::from(
                r.expect_error.is_some()
                    || r.applied.is_some()
                    || r.duplicate.is_some()
                    || r.used.is_some()
                    || r.remaining.is_some(),
            ),
            other => usize::from(other.expect_error().is_some()),
        }
    }
}

fn check_label(what: &str, c: &CheckStep, at: Option<Rel>) -> String {
    let mut s = format!("{what} {}", c.feature);
    if let Some(t) = &c.tenant {
        s += &format!(" tenant={t}");
    }
    if let Some(i) = c.intent {
        s += &format!(" {i:?}").to_uppercase();
    }
    if let Some(q) = c.quantity {
        s += &format!(" ×{q}");
    }
    if let Some(a) = at {
        s += &format!(" at {a}");
    }
    s
}

// =============================================================================== loading and validation

struct Loaded {
    file: String,
    scenario: Scenario,
    catalog_path: PathBuf,
    catalog: Arc<Catalog>,
}

fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every scenario file, parsed and validated; panics (naming the file) on any problem, and when
/// there are none at all.
fn load_all() -> Vec<Loaded> {
    let dir = crate_root().join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read scenario directory {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenario files (*.toml) found in {}", dir.display());
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for path in files {
        let file = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        match load_one(&path) {
            Ok((scenario, catalog_path, catalog)) => out.push(Loaded { file, scenario, catalog_path, catalog }),
            Err(e) => problems.push(format!("{file}: {e}")),
        }
    }
    assert!(problems.is_empty(), "invalid scenario file(s):\n{}", problems.join("\n"));
    out
}

fn load_one(path: &Path) -> Result<(Scenario, PathBuf, Arc<Catalog>), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let scenario: Scenario = toml::from_str(&src).map_err(|e| format!("does not parse: {e}"))?;
    let catalog_path = crate_root().join(&scenario.catalog);
    let mut catalog = load_catalog(&catalog_path).map_err(|e| format!("catalog: {e}"))?;
    match scenario.edition {
        Some(EditionName::Ce) => catalog = catalog.with_edition(Edition::Ce),
        Some(EditionName::Ee) => catalog = catalog.with_edition(Edition::Ee),
        None => {}
    }
    validate(&scenario, &catalog)?;
    Ok((scenario, catalog_path, Arc::new(catalog)))
}

/// Whether `name` is a value of the proto enum whose names carry `prefix` (and not `_UNSPECIFIED`).
fn proto_name(prefix: &str, name: &str, lookup: fn(&str) -> bool) -> bool {
    name != "UNSPECIFIED" && lookup(&format!("{prefix}{name}"))
}

fn is_reason(s: &str) -> bool {
    proto_name("REASON_", s, |n| pb::Reason::from_str_name(n).is_some())
}
fn is_source(s: &str) -> bool {
    s == "NONE" || proto_name("SOURCE_", s, |n| pb::Source::from_str_name(n).is_some())
}
fn is_phase(s: &str) -> bool {
    proto_name("PHASE_", s, |n| pb::Phase::from_str_name(n).is_some())
}
fn is_notice(s: &str) -> bool {
    proto_name("NOTICE_KIND_", s, |n| pb::NoticeKind::from_str_name(n).is_some())
}
fn is_plan_source(s: &str) -> bool {
    proto_name("PLAN_SOURCE_", s, |n| pb::PlanSource::from_str_name(n).is_some())
}

const CODES: &[&str] = &[
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `"TRIAL_ENDING"` or `"TRIAL_ENDING(7)"` (with the notice's days left).
fn parse_notice(s: &str) -> Result<(String, Option<i64>), String> {
    let (kind, days) = match s.split_once('(') {
        Some((k, rest)) => {
            let n = rest
                .strip_suffix(')')
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(|| format!("bad notice `{s}`: write KIND or KIND(days_left)"))?;
            (k.trim(), Some(n))
        }
        None => (s.trim(), None),
    };
    if !is_notice(kind) {
        return Err(format!("unknown notice kind `{kind}`"));
    }
    Ok((kind.to_string(), days))
}

fn validate(s: &Scenario, c: &Catalog) -> Result<(), String> {
    if s.steps.is_empty() {
        return Err("no [[step]] entries".into());
    }
    // Features with recorded usage: checks of them at another time would depend on the calendar
    // (the counter period containing `at`), which differs between the core's fixed T0 and now.
    let metered_with_usage: Vec<&str> = s
        .steps
        .iter()
        .filter_map(|st| match st {
            Step::RecordUsage(r) => Some(r.feature.as_str()),
            _ => None,
        })
        .collect();
    for (i, step) in s.steps.iter().enumerate() {
        let at = |why: String| format!("step {} `{}`: {why}", i + 1, step.label());
        if let Some(code) = step.expect_error()
            && !CODES.contains(&code)
        {
            return Err(at(format!("expect_error `{code}` is not a gRPC status code name (e.g. INVALID_ARGUMENT)")));
        }
        match step {
            Step::StripeSubscription(sub) => {
                if !s.core_only {
                    return Err(at(
                        "Stripe subscriptions cannot be created over gRPC yet: mark the scenario `core_only = true`"
                            .into(),
                    ));
                }
                SubscriptionStatus::parse(&sub.status)
                    .ok_or_else(|| at(format!("unknown subscription status `{}`", sub.status)))?;
            }
            Step::SetOverride(o) => {
                let set =
                    [o.enabled.is_some(), o.number.is_some(), o.unlimited.is_some()].iter().filter(|&&b| b).count();
                if set > 1 {
                    return Err(at("set at most one of enabled, number, unlimited (a oneof)".into()));
                }
            }
            Step::ExtendTrial(e) if e.days.is_some() && e.trial_end.is_some() => {
                return Err(at("set `days` or `trial_end`, not both (a oneof)".into()));
            }
            Step::Check(ch) => validate_check(ch, ch.at, c, &metered_with_usage).map_err(at)?,
            Step::CheckBatch(b) => {
                if b.items.is_empty() {
                    return Err(at("a batch needs items".into()));
                }
                for (j, item) in b.items.iter().enumerate() {
                    let item_at = |why: String| at(format!("item {} ({}): {why}", j + 1, item.feature));
                    if item.tenant.is_some() || item.at.is_some() || item.expect_error.is_some() {
                        return Err(item_at(
                            "`tenant`, `at` and `expect_error` belong on the batch, not its items".into(),
                        ));
                    }
                    if b.expect_error.is_none() {
                        validate_check(item, b.at, c, &metered_with_usage).map_err(item_at)?;
                    }
                }
            }
            Step::Explain(e) => {
                if let Some(p) = &e.phase
                    && !is_phase(p)
                {
                    return Err(at(format!("unknown phase `{p}`")));
                }
                if let Some(p) = &e.plan_source
                    && !is_plan_source(p)
                {
                    return Err(at(format!("unknown plan_source `{p}`")));
                }
                for n in e.notices.iter().flatten() {
                    parse_notice(n).map_err(at)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn validate_check(ch: &CheckStep, at: Option<Rel>, c: &Catalog, metered_with_usage: &[&str]) -> Result<(), String> {
    if ch.expect_error.is_some() {
        return Ok(());
    }
    if ch.allowed.is_none() {
        return Err("every check states `allowed`".into());
    }
    if let Some(a) = at {
        if ch.intent == Some(IntentArg::Read) {
            return Err("Explain (used for `at`) decides intent WRITE only: put READ checks in a scenario whose times are shifted so that the check happens now".into());
        }
        if ch.quantity.is_some_and(|q| q != 1) {
            return Err("Explain (used for `at`) decides quantity 1 only".into());
        }
        if a.0 != 0 && metered_with_usage.contains(&ch.feature.as_str()) {
            return Err("a metered feature with recorded usage is checked only at T0 (its usage period at another time depends on the calendar)".into());
        }
    }
    for (field, v, ok) in [
        ("reason", &ch.reason, is_reason as fn(&str) -> bool),
        ("source", &ch.source, is_source),
        ("phase", &ch.phase, is_phase),
        ("shadow_denial", &ch.shadow_denial, |s: &str| s == "NONE" || is_reason(s)),
    ] {
        if let Some(v) = v
            && !ok(v)
        {
            return Err(format!("unknown {field} `{v}`"));
        }
    }
    if let Some(u) = &ch.upgrade {
        let valid = match u.split_once(':') {
            Some(("plan", k)) => c.plan(k).is_some(),
            Some(("addon", k)) => c.addon(k).is_some(),
            _ => u == "none",
        };
        if !valid {
            return Err(format!(
                "upgrade `{u}`: write \"plan:KEY\", \"addon:KEY\" (keys from the catalog) or \"none\""
            ));
        }
    }
    if let Some(p) = &ch.plan
        && c.plan(p).is_none()
    {
        return Err(format!("plan `{p}` is not in the catalog"));
    }
    for n in ch.notices.iter().flatten() {
        parse_notice(n)?;
    }
    Ok(())
}

// =============================================================================== observations and comparison

/// A decision, as both paths report it.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    allowed: bool,
    reason: String,
    source: String,
    upgrade: String,
    limit: Option<i64>,
    used: Option<i64>,
    remaining: Option<i64>,
    unlimited: bool,
    phase: String,
    plan: String,
    notices: Vec<(String, i64)>,
    shadow_denial: String,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allowed={} reason={} source={} upgrade={}", self.allowed, self.reason, self.source, self.upgrade)?;
        if let Some(l) = self.limit {
            write!(f, " limit={l}")?;
        }
        if self.unlimited {
            f.write_str(" unlimited")?;
        }
        if let Some(u) = self.used {
            write!(f, " used={u}")?;
        }
        if let Some(r) = self.remaining {
            write!(f, " remaining={r}")?;
        }
        write!(
            f,
            " plan={} phase={} notices={:?} shadow_denial={}",
            self.plan, self.phase, self.notices, self.shadow_denial
        )
    }
}

struct Mismatches(Vec<String>);

impl Mismatches {
    fn new() -> Self {
        Mismatches(Vec::new())
    }
    fn eq<T: PartialEq + fmt::Debug>(&mut self, field: &str, expected: Option<T>, got: T) {
        if let Some(e) = expected
            && e != got
        {
            self.0.push(format!("{field}: expected {e:?}, got {got:?}"));
        }
    }
    fn notices(&mut self, expected: Option<&Vec<String>>, got: &[(String, i64)]) {
        let Some(expected) = expected else { return };
        let parsed: Vec<(String, Option<i64>)> = expected.iter().filter_map(|n| parse_notice(n).ok()).collect();
        let same = parsed.len() == got.len()
            && parsed.iter().zip(got).all(|((ek, ed), (gk, gd))| ek == gk && ed.is_none_or(|d| d == *gd));
        if !same {
            let got: Vec<String> = got.iter().map(|(k, d)| format!("{k}({d})")).collect();
            self.0.push(format!("notices: expected {expected:?}, got {got:?}"));
        }
    }
    fn into_result(self, observed: &dyn fmt::Display) -> Result<(), String> {
        if self.0.is_empty() { Ok(()) } else { Err(format!("{}\n        observed: {observed}", self.0.join("; "))) }
    }
}

fn compare_decision(e: &CheckStep, o: &Observed) -> Result<(), String> {
    let mut m = Mismatches::new();
    m.eq("allowed", e.allowed, o.allowed);
    m.eq("reason", e.reason.as_deref(), o.reason.as_str());
    m.eq("source", e.source.as_deref(), o.source.as_str());
    m.eq("upgrade", e.upgrade.as_deref(), o.upgrade.as_str());
    m.eq("limit", e.limit.map(Some), o.limit);
    m.eq("used", e.used.map(Some), o.used);
    m.eq("remaining", e.remaining.map(Some), o.remaining);
    m.eq("unlimited", e.unlimited, o.unlimited);
    m.eq("phase", e.phase.as_deref(), o.phase.as_str());
    m.eq("plan", e.plan.as_deref(), o.plan.as_str());
    m.eq("shadow_denial", e.shadow_denial.as_deref(), o.shadow_denial.as_str());
    m.notices(e.notices.as_ref(), &o.notices);
    m.into_result(o)
}

#[derive(Debug)]
struct ObservedRecord {
    applied: bool,
    duplicate: bool,
    used: i64,
    remaining: Option<i64>,
}

impl fmt::Display for ObservedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "applied={} duplicate={} used={} remaining={:?}",
            self.applied, self.duplicate, self.used, self.remaining
        )
    }
}

fn compare_record(e: &RecordUsage, o: &ObservedRecord) -> Result<(), String> {
    let mut m = Mismatches::new();
    m.eq("applied", e.applied, o.applied);
    m.eq("duplicate", e.duplicate, o.duplicate);
    m.eq("used", e.used, o.used);
    m.eq("remaining", e.remaining.map(Some), o.remaining);
    m.into_result(o)
}

#[derive(Debug)]
struct ObservedExplain {
    known: bool,
    plan: String,
    plan_source: String,
    phase: String,
    notices: Vec<(String, i64)>,
    trial_days_left: i64,
}

impl fmt::Display for ObservedExplain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "known={} plan={} plan_source={} phase={} notices={:?} trial_days_left={}",
            self.known, self.plan, self.plan_source, self.phase, self.notices, self.trial_days_left
        )
    }
}

fn compare_explain(e: &ExplainStep, o: &ObservedExplain) -> Result<(), String> {
    let mut m = Mismatches::new();
    m.eq("known", e.known, o.known);
    m.eq("plan", e.plan.as_deref(), o.plan.as_str());
    m.eq("plan_source", e.plan_source.as_deref(), o.plan_source.as_str());
    m.eq("phase", e.phase.as_deref(), o.phase.as_str());
    m.eq("trial_days_left", e.trial_days_left, o.trial_days_left);
    m.notices(e.notices.as_ref(), &o.notices);
    m.into_result(o)
}

#[derive(Debug)]
struct ObservedUsage {
    used: i64,
    limit: Option<i64>,
    remaining: Option<i64>,
    unlimited: bool,
}

impl fmt::Display for ObservedUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "used={} limit={:?} remaining={:?} unlimited={}",
            self.used, self.limit, self.remaining, self.unlimited
        )
    }
}

fn compare_usage(e: &UsageStep, o: &ObservedUsage) -> Result<(), String> {
    let mut m = Mismatches::new();
    m.eq("used", e.used, o.used);
    m.eq("limit", e.limit.map(Some), o.limit);
    m.eq("remaining", e.remaining.map(Some), o.remaining);
    m.eq("unlimited", e.unlimited, o.unlimited);
    m.into_result(o)
}

/// An RPC-level error: a gRPC status code name and its message.
#[derive(Debug)]
struct RpcError {
    code: String,
    message: String,
}

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError { code: "INVALID_ARGUMENT".into(), message: message.into() }
}

/// Settle a step's result against its `expect_error`: `Ok(Some(v))` to go on comparing `v`,
/// `Ok(None)` when the expected error happened, `Err` on a mismatch.
fn settle<T>(expect_error: Option<&str>, r: Result<T, RpcError>) -> Result<Option<T>, String> {
    match (expect_error, r) {
        (None, Ok(v)) => Ok(Some(v)),
        (None, Err(e)) => Err(format!("unexpected error {}: {}", e.code, e.message)),
        (Some(want), Err(e)) if e.code == want => Ok(None),
        (Some(want), Err(e)) => Err(format!("expected error {want}, got {}: {}", e.code, e.message)),
        (Some(want), Ok(_)) => Err(format!("expected error {want}, but the call succeeded")),
    }
}

/// Failures (and known bugs) of one path, as `file: step N \`label\`: …`.
#[derive(Default)]
struct Outcomes {
    failures: Vec<String>,
    known_bugs: Vec<String>,
}

impl Outcomes {
    fn report(&mut self, path: PathKind, file: &str, index: usize, step: &Step, r: Result<(), String>) {
        let at = format!("{file}: step {} `{}`", index + 1, step.label());
        match (step.known_bug().and_then(|k| k.on(path)), r) {
            (None, Ok(())) => {}
            (None, Err(e)) => self.failures.push(format!("{at}: {e}")),
            (Some(bug), Err(e)) => {
                println!("       KNOWN BUG {at}: {bug}\n         {e}");
                self.known_bugs.push(format!("{at}: {bug}"));
            }
            (Some(bug), Ok(())) => {
                self.failures
                    .push(format!("{at}: marked as a known bug ({bug}) but passes now: remove the `known_bug` marker"));
            }
        }
    }

    fn finish(self, path: &str) {
        if !self.known_bugs.is_empty() {
            println!("{path}: {} known bug(s) tolerated:\n  {}", self.known_bugs.len(), self.known_bugs.join("\n  "));
        }
        assert!(
            self.failures.is_empty(),
            "scenario failures against the {path} ({}):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

// =============================================================================== path 1: the pure core

/// The tenant states and usage the core path keeps, mirroring what the server stores.
struct CoreWorld {
    catalog: Arc<Catalog>,
    t0: UnixTime,
    default_tenant: String,
    tenants: HashMap<String, TenantState>,
    /// (tenant, feature) → (period_start, used), as the store's usage counter row.
    usage: HashMap<(String, FeatureIdx), (UnixTime, i64)>,
    /// (tenant, feature, idempotency key) → the original (applied, used) result.
    reports: HashMap<(String, FeatureIdx, String), (bool, i64)>,
}

fn notice_name(k: NoticeKind) -> &'static str {
    match k {
        NoticeKind::TrialEnding => "TRIAL_ENDING",
        NoticeKind::TrialExpired => "TRIAL_EXPIRED",
        NoticeKind::HardLocked => "HARD_LOCKED",
        NoticeKind::PaymentPastDue => "PAYMENT_PAST_DUE",
        NoticeKind::TenantArchived => "TENANT_ARCHIVED",
    }
}

fn plan_source_name(s: PlanSource) -> &'static str {
    match s {
        PlanSource::Subscription => "SUBSCRIPTION",
        PlanSource::ManualAssignment => "MANUAL_ASSIGNMENT",
        PlanSource::ProductTrial => "PRODUCT_TRIAL",
        PlanSource::Default => "DEFAULT",
        PlanSource::UnknownTenant => "UNKNOWN_TENANT",
    }
}

fn observe_core(r: &ResolvedTenant, d: &Decision) -> Observed {
    Observed {
        allowed: d.allowed,
        reason: d.reason.as_str().into(),
        source: d.source.map_or("NONE", |s| s.as_str()).into(),
        upgrade: match &d.upgrade {
            Some(Upgrade::Plan(k)) => format!("plan:{k}"),
            Some(Upgrade::AddOn(k)) => format!("addon:{k}"),
            None => "none".into(),
        },
        limit: d.limit(),
        used: d.used,
        remaining: d.remaining,
        unlimited: d.unlimited(),
        phase: r.lifecycle.phase.as_str().into(),
        plan: r.plan_key().into(),
        notices: r.lifecycle.notices.iter().map(|n| (notice_name(n.kind).to_string(), n.days_left)).collect(),
        shadow_denial: d.shadow_denial.map_or("NONE", Reason::as_str).into(),
    }
}

fn core_intent(i: Option<IntentArg>) -> Intent {
    match i {
        Some(IntentArg::Read) => Intent::Read,
        Some(IntentArg::Write) | None => Intent::Write,
    }
}

/// A refusal of the core's, as the server reports it (`INVALID_ARGUMENT`, `field: message`).
fn refused(e: Invalid) -> RpcError {
    invalid(e.to_string())
}

impl CoreWorld {
    fn new(catalog: Arc<Catalog>, t0: UnixTime, default_tenant: &str) -> CoreWorld {
        CoreWorld {
            catalog,
            t0,
            default_tenant: default_tenant.into(),
            tenants: HashMap::new(),
            usage: HashMap::new(),
            reports: HashMap::new(),
        }
    }

    fn tenant_id<'a>(&'a self, t: Option<&'a str>) -> &'a str {
        t.unwrap_or(&self.default_tenant)
    }

    fn state(&self, tenant: &str) -> TenantState {
        self.tenants.get(tenant).cloned().unwrap_or_else(|| TenantState::unknown(tenant))
    }

    /// The usage a check sees: the recorded counter when its period is the check's (or later).
    fn used(&self, tenant: &str, r: &ResolvedTenant, fi: FeatureIdx) -> i64 {
        if !self.catalog.features[fi].kind.is_metered() {
            return 0;
        }
        let period_start = r.features[fi].period.map_or(0, |p| p.start);
        match self.usage.get(&(tenant.to_string(), fi)) {
            Some(&(p, u)) if p >= period_start => u,
            _ => 0,
        }
    }

    fn run(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Check(c) => self.check(c),
            Step::CheckBatch(b) => self.check_batch(b),
            Step::Explain(e) => self.explain(e),
            Step::Usage(u) => self.usage_step(u),
            Step::RecordUsage(r) => {
                let out = self.record_usage(r);
                match settle(r.expect_error.as_deref(), out)? {
                    Some(o) => compare_record(r, &o),
                    None => Ok(()),
                }
            }
            Step::StripeSubscription(s) => self.stripe_subscription(s),
            admin => self.admin(admin),
        }
    }

    /// An admin step: the core's `Command::validate`, then `Command::apply` — the functions the
    /// server runs (the store only saves what `apply` produced).
    fn admin(&mut self, step: &Step) -> Result<(), String> {
        let Some(meta) = step.meta() else { unreachable!("not an admin step") };
        let tenant = self.tenant_id(meta.tenant).to_string();
        let actor = meta.actor.unwrap_or(DEFAULT_ACTOR).to_string();
        let rationale = meta.rationale.map_or_else(|| format!("scenario step: {}", step.label()), str::to_string);
        let by = Actor::admin(&actor, &rationale, self.t0);
        let result =
            self.command(step).and_then(|c| c.validate(&self.catalog, &tenant, &by).map(|()| c).map_err(refused));
        if let Some(c) = settle(meta.expect_error, result)? {
            let state = self.tenants.entry(tenant.clone()).or_insert_with(|| TenantState::unknown(&tenant));
            c.apply(state, &by);
        }
        Ok(())
    }

    /// The `Command` an admin step asks for, read the way the gRPC layer reads its request (with
    /// the core's defaults: `command::trial`, `command::addon_quantity`).
    fn command(&self, step: &Step) -> Result<Command, RpcError> {
        let at = |r: Rel| r.at(self.t0);
        Ok(match step {
            Step::PutTenant(p) => Command::PutTenant {
                stripe_customer_id: p.stripe_customer_id.clone().filter(|c| !c.is_empty()),
                trial: command::trial(&self.catalog, p.trial_start.map(at), p.trial_end.map(at)).map_err(refused)?,
                archived: p.archived,
            },
            Step::AssignPlan(a) => Command::AssignPlan { plan: a.plan.clone(), expires_at: a.expires_at.map(at) },
            Step::UnassignPlan(u) => Command::UnassignPlan { plan: (!u.plan.is_empty()).then(|| u.plan.clone()) },
            Step::GrantAddon(g) => Command::GrantAddOn {
                addon: g.addon.clone(),
                quantity: command::addon_quantity(g.quantity.unwrap_or(0)),
                expires_at: g.expires_at.map(at),
            },
            Step::RevokeAddon(r) => Command::RevokeAddOn { addon: r.addon.clone() },
            Step::SetOverride(o) => {
                command::required("feature", &o.feature).map_err(refused)?;
                let value = match (o.enabled, o.number, o.unlimited) {
                    (Some(b), _, _) => Value::Bool(b),
                    (_, Some(n), _) => Value::Number(n),
                    (_, _, Some(true)) => Value::Unlimited,
                    _ => return Err(invalid("value: set one of `enabled`, `number` or `unlimited: true`")),
                };
                Command::SetOverride { feature: o.feature.clone(), value, expires_at: o.expires_at.map(at) }
            }
            Step::ClearOverride(c) => Command::ClearOverride { feature: c.feature.clone() },
            Step::ExtendTrial(e) => {
                let extension = match (e.days, e.trial_end) {
                    (Some(d), _) => TrialExtension::Days(d),
                    (_, Some(t)) => TrialExtension::Until(at(t)),
                    (None, None) => return Err(invalid("until: set `days` or `trial_end`")),
                };
                Command::ExtendTrial { extension }
            }
            other => unreachable!("not an admin step: {}", other.label()),
        })
    }

    /// A subscription event, applied by the core's `billing::apply_subscription` (the store
    /// only finds the tenant and saves the result).
    fn stripe_subscription(&mut self, st: &StripeSubscription) -> Result<(), String> {
        let t0 = self.t0;
        let tenant = self.tenant_id(st.tenant.as_deref()).to_string();
        let s = self.tenants.entry(tenant.clone()).or_insert_with(|| TenantState::unknown(&tenant));
        let status = SubscriptionStatus::parse(&st.status).unwrap_or_else(|| unreachable!("validated at load"));
        let event = format!("evt_{}_{}", st.id, s.revision + 1);
        let addons = st
            .addons
            .iter()
            .enumerate()
            .map(|(i, addon)| AddOnGrant {
                addon: addon.clone(),
                quantity: 1,
                origin: GrantOrigin::Stripe { subscription_id: st.id.clone(), item_id: format!("si_{}_{i}", st.id) },
                actor: "stripe".into(),
                rationale: event.clone(),
                granted_at: t0,
                expires_at: None,
            })
            .collect();
        let facts = SubscriptionFacts {
            subscription: Subscription {
                id: st.id.clone(),
                status,
                plan: st.plan.clone(),
                interval: st.interval,
                seats: st.seats,
                trial_end: st.trial_end.map(|t| t.at(t0)),
                current_period_start: st.current_period_start.map(|t| t.at(t0)),
                current_period_end: st.current_period_end.map(|t| t.at(t0)),
                cancel_at_period_end: st.cancel_at_period_end,
                last_event_created: t0,
                last_event_id: event.clone(),
            },
            customer_id: format!("cus_{tenant}"),
            tenant_hint: Some(tenant.clone()),
            addons,
        };
        let stored = s.subscriptions.iter().find(|x| x.id == st.id).cloned();
        let by = Actor { actor: "stripe".into(), rationale: String::new(), origin: event, at: t0 };
        match billing::apply_subscription(s, stored.as_ref(), &facts, &by) {
            Effect::Applied(_) => Ok(()),
            other => Err(format!("stripe_subscription {}: {other:?} (events here all happen at T0)", st.id)),
        }
    }

    /// `Service::record_usage` on the in-memory counters: the core's `validate_report`,
    /// `usage_gate` and `apply_report` (the rule the store runs as one atomic statement).
    fn record_usage(&mut self, r: &RecordUsage) -> Result<ObservedRecord, RpcError> {
        let tenant = self.tenant_id(r.tenant.as_deref()).to_string();
        validate_tenant_id(&tenant).map_err(|e| invalid(format!("tenant_id: {e}")))?;
        let c = Arc::clone(&self.catalog);
        let mode = match r.mode {
            ModeArg::Delta => UsageMode::Delta,
            ModeArg::Set => UsageMode::Set,
        };
        let key = r.key.clone().unwrap_or_default();
        let fi = usage::validate_report(&c, &r.feature, mode, r.value, &key).map_err(refused)?;
        let resolved = resolve(&c, &self.state(&tenant), self.t0);
        let f = &resolved.features[fi];
        let period_start = f.period.map_or(0, |p| p.start);
        let observed = |applied, duplicate, used| ObservedRecord {
            applied,
            duplicate,
            used,
            remaining: usage::remaining(f.value, used),
        };
        let limit = match usage_gate(&resolved, fi, r.enforce) {
            UsageGate::Refuse(_) => return Ok(observed(false, false, self.used(&tenant, &resolved, fi))),
            UsageGate::Record { limit } => limit,
        };
        // The store's idempotency record: a key seen before answers with the original result.
        let report_key = (tenant.clone(), fi, key.clone());
        if !key.is_empty()
            && let Some(&(applied, used)) = self.reports.get(&report_key)
        {
            return Ok(observed(applied, true, used));
        }
        let row_key = (tenant.clone(), fi);
        let row = self.usage.get(&row_key).map(|&(period_start, used)| Counter { period_start, used });
        let (applied, used) = match usage::apply_report(row, mode, r.value, period_start, limit) {
            CounterUpdate::Applied(next) => {
                self.usage.insert(row_key, (next.period_start, next.used));
                (true, next.used)
            }
            CounterUpdate::Refused { used } => (false, used),
            CounterUpdate::Overflow => return Err(invalid("value: would overflow the usage counter")),
        };
        if !key.is_empty() {
            self.reports.insert(report_key, (applied, used));
        }
        Ok(observed(applied, false, used))
    }

    /// One check: `resolve` + `decide` at T0, or `explain` at `at` (as the server's Explain).
    fn decide_one(&self, tenant: &str, c: &CheckStep, at: Option<Rel>) -> Result<Observed, RpcError> {
        validate_tenant_id(tenant).map_err(|e| invalid(format!("tenant_id: {e}")))?;
        let quantity = c.quantity.unwrap_or(1);
        if quantity < 0 {
            return Err(invalid(format!("quantity: must not be negative (got {quantity})")));
        }
        let state = self.state(tenant);
        match at {
            None => {
                let r = resolve(&self.catalog, &state, self.t0);
                let used = self.catalog.feature_idx(&c.feature).map_or(0, |fi| self.used(tenant, &r, fi));
                let d = decide(&r, &c.feature, quantity, core_intent(c.intent), used);
                Ok(observe_core(&r, &d))
            }
            Some(at) => {
                let mut out = self.explain_decisions(tenant, &state, std::slice::from_ref(&c.feature), at)?;
                Ok(out.remove(0))
            }
        }
    }

    /// Decisions as Explain makes them (WRITE × 1) at `at`, for `features` in order.
    fn explain_decisions(
        &self,
        tenant: &str,
        state: &TenantState,
        features: &[String],
        at: Rel,
    ) -> Result<Vec<Observed>, RpcError> {
        let now = at.at(self.t0);
        let wanted = features
            .iter()
            .map(|f| self.catalog.feature_idx(f).ok_or_else(|| invalid(format!("features: unknown feature `{f}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        let probe = resolve(&self.catalog, state, now);
        let used: Vec<i64> = (0..self.catalog.features.len()).map(|fi| self.used(tenant, &probe, fi)).collect();
        let e = explain(&self.catalog, state, now, Some(&wanted), &|fi| used[fi]);
        Ok(e.features.iter().map(|f| observe_core(&e.resolved, &f.decision)).collect())
    }

    fn check(&self, c: &CheckStep) -> Result<(), String> {
        let tenant = self.tenant_id(c.tenant.as_deref());
        match settle(c.expect_error.as_deref(), self.decide_one(tenant, c, c.at))? {
            Some(o) => compare_decision(c, &o),
            None => Ok(()),
        }
    }

    fn check_batch(&self, b: &CheckBatch) -> Result<(), String> {
        let tenant = self.tenant_id(b.tenant.as_deref());
        let result = match b.at {
            None => b.items.iter().map(|item| self.decide_one(tenant, item, None)).collect::<Result<Vec<_>, _>>(),
            Some(at) => {
                let features: Vec<String> = b.items.iter().map(|i| i.feature.clone()).collect();
                validate_tenant_id(tenant)
                    .map_err(|e| invalid(format!("tenant_id: {e}")))
                    .and_then(|()| self.explain_decisions(tenant, &self.state(tenant), &features, at))
            }
        };
        let Some(observed) = settle(b.expect_error.as_deref(), result)? else {
            return Ok(());
        };
        compare_batch(b, &observed)
    }

    fn explain(&self, e: &ExplainStep) -> Result<(), String> {
        let tenant = self.tenant_id(e.tenant.as_deref());
        let result = validate_tenant_id(tenant).map_err(|err| invalid(format!("tenant_id: {err}"))).map(|()| {
            let state = self.state(tenant);
            let now = e.at.map_or(self.t0, |a| a.at(self.t0));
            let probe = resolve(&self.catalog, &state, now);
            let used: Vec<i64> = (0..self.catalog.features.len()).map(|fi| self.used(tenant, &probe, fi)).collect();
            let x = explain(&self.catalog, &state, now, None, &|fi| used[fi]);
            let r = &x.resolved;
            ObservedExplain {
                known: r.known,
                plan: r.plan_key().into(),
                plan_source: plan_source_name(r.plan.source).into(),
                phase: r.lifecycle.phase.as_str().into(),
                notices: r.lifecycle.notices.iter().map(|n| (notice_name(n.kind).to_string(), n.days_left)).collect(),
                trial_days_left: r.lifecycle.days_left.unwrap_or_default(),
            }
        });
        match settle(e.expect_error.as_deref(), result)? {
            Some(o) => compare_explain(e, &o),
            None => Ok(()),
        }
    }

    fn usage_step(&self, u: &UsageStep) -> Result<(), String> {
        let tenant = self.tenant_id(u.tenant.as_deref());
        let result = (|| {
            validate_tenant_id(tenant).map_err(|e| invalid(format!("tenant_id: {e}")))?;
            let fi = self
                .catalog
                .feature_idx(&u.feature)
                .ok_or_else(|| invalid(format!("features: unknown feature `{}`", u.feature)))?;
            if !self.catalog.features[fi].kind.is_metered() {
                return Err(invalid(format!("features: `{}` is not a metered (gauge or counter) feature", u.feature)));
            }
            let r = resolve(&self.catalog, &self.state(tenant), self.t0);
            let used = self.used(tenant, &r, fi);
            let limit = r.features[fi].value;
            Ok(ObservedUsage {
                used,
                limit: match limit {
                    Value::Number(n) => Some(n),
                    _ => None,
                },
                remaining: usage::remaining(limit, used),
                unlimited: limit == Value::Unlimited,
            })
        })();
        match settle(u.expect_error.as_deref(), result)? {
            Some(o) => compare_usage(u, &o),
            None => Ok(()),
        }
    }
}

fn compare_batch(b: &CheckBatch, observed: &[Observed]) -> Result<(), String> {
    if observed.len() != b.items.len() {
        return Err(format!("expected {} decisions, got {}", b.items.len(), observed.len()));
    }
    let errors: Vec<String> = b
        .items
        .iter()
        .zip(observed)
        .enumerate()
        .filter_map(|(j, (item, o))| {
            compare_decision(item, o)
                .err()
                .map(|e| format!("\n      item {} `{}`: {e}", j + 1, check_label("check", item, None)))
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.concat()) }
}

/// Path 1: every scenario against `resolve` / `decide` / `explain`.
#[test]
fn scenarios_against_the_core() {
    let all = load_all();
    let mut out = Outcomes::default();
    let mut assertions = 0;
    for l in &all {
        println!("core   {} — {}", l.file, l.scenario.description);
        let mut world = CoreWorld::new(Arc::clone(&l.catalog), CORE_T0, &l.scenario.tenant);
        for (i, step) in l.scenario.steps.iter().enumerate() {
            assertions += step.assertions();
            out.report(PathKind::Core, &l.file, i, step, world.run(step));
        }
    }
    println!("core: {} scenario file(s), {assertions} assertion(s), {} failure(s)", all.len(), out.failures.len());
    out.finish("core");
}

// =============================================================================== path 2: the server over gRPC

struct ServerWorld {
    running: Running,
    /// When the scenario runs through a relay: the relay in front of `running`.
    relay: Option<Running>,
    data: EntitlementServiceClient<Channel>,
    admin: AdminServiceClient<Channel>,
    t0: UnixTime,
    default_tenant: String,
    file: String,
    _dir: tempfile::TempDir,
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn rpc<T>(r: Result<tonic::Response<T>, Status>) -> Result<T, RpcError> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| RpcError { code: code_name(s.code()).into(), message: s.message().into() })
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().expect("valid header"));
    r
}

fn ts(t: UnixTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t, nanos: 0 }
}

/// The name of a proto enum value without its prefix; `_UNSPECIFIED` reads as `NONE`.
fn enum_name(name: Option<&str>, prefix: &str) -> String {
    match name.map(|n| n.strip_prefix(prefix).unwrap_or(n)) {
        Some("UNSPECIFIED") => "NONE".into(),
        Some(n) => n.into(),
        None => "INVALID_ENUM_VALUE".into(),
    }
}

fn observe_pb(d: &pb::Decision) -> Observed {
    Observed {
        allowed: d.allowed,
        reason: enum_name(pb::Reason::try_from(d.reason).ok().map(|r| r.as_str_name()), "REASON_"),
        source: enum_name(pb::Source::try_from(d.source).ok().map(|r| r.as_str_name()), "SOURCE_"),
        upgrade: match &d.upgrade {
            Some(u) if u.kind == pb::UpgradeKind::Plan as i32 => format!("plan:{}", u.key),
            Some(u) if u.kind == pb::UpgradeKind::Addon as i32 => format!("addon:{}", u.key),
            Some(u) => format!("?{}:{}", u.kind, u.key),
            None => "none".into(),
        },
        limit: d.limit,
        used: d.used,
        remaining: d.remaining,
        unlimited: d.unlimited,
        phase: enum_name(pb::Phase::try_from(d.phase).ok().map(|r| r.as_str_name()), "PHASE_"),
        plan: d.plan.clone(),
        notices: observe_notices(&d.notices),
        shadow_denial: enum_name(pb::Reason::try_from(d.shadow_denial).ok().map(|r| r.as_str_name()), "REASON_"),
    }
}

fn observe_notices(ns: &[pb::Notice]) -> Vec<(String, i64)> {
    ns.iter()
        .map(|n| {
            (enum_name(pb::NoticeKind::try_from(n.kind).ok().map(|k| k.as_str_name()), "NOTICE_KIND_"), n.days_left)
        })
        .collect()
}

fn pb_intent(i: Option<IntentArg>) -> i32 {
    match i {
        None => pb::Intent::Unspecified as i32,
        Some(IntentArg::Read) => pb::Intent::Read as i32,
        Some(IntentArg::Write) => pb::Intent::Write as i32,
    }
}

/// `ServeArgs` as `serve` with no flags would have them, so that new settings need no change here.
fn serve_defaults() -> ServeArgs {
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }
    <Serve as clap::Parser>::try_parse_from(["scenarios"]).unwrap_or_else(|e| panic!("ServeArgs defaults: {e}")).args
}

impl ServerWorld {
    async fn start(l: &Loaded, through_relay: bool) -> ServerWorld {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = ServeArgs {
            catalog: l.catalog_path.clone(),
            database_url: dir.path().join("scenario.db").display().to_string(),
            grpc_addr: "127.0.0.1:0".parse().expect("addr"),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            admin_token: Some(ADMIN_TOKEN.into()),
            max_ttl: Duration::from_secs(60),
            cache_capacity: 1_000,
            edition: l.scenario.edition.map(|e| match e {
                EditionName::Ee => EditionArg::Ee,
                EditionName::Ce => EditionArg::Ce,
            }),
            // Everything else (webhook settings, …) at its CLI default.
            ..serve_defaults()
        };
        let running =
            server::start(&args).await.unwrap_or_else(|e| panic!("{}: the server does not start: {e}", l.file));
        // Through a relay: a second server with no database, in front of the first.
        let relay = if through_relay {
            let relay_args = ServeArgs {
                upstream: Some(format!("http://{}", running.grpc_addr)),
                database_url: String::new(),
                watch_heartbeat: Duration::from_millis(200),
                ..args.clone()
            };
            Some(
                server::start(&relay_args)
                    .await
                    .unwrap_or_else(|e| panic!("{}: the relay does not start: {e}", l.file)),
            )
        } else {
            None
        };
        let url = format!("http://{}", relay.as_ref().unwrap_or(&running).grpc_addr);
        let data =
            EntitlementServiceClient::connect(url.clone()).await.unwrap_or_else(|e| panic!("{}: connect: {e}", l.file));
        let admin = AdminServiceClient::connect(url).await.unwrap_or_else(|e| panic!("{}: connect: {e}", l.file));
        ServerWorld {
            running,
            relay,
            data,
            admin,
            t0: entitlements::clock::unix_now(),
            default_tenant: l.scenario.tenant.clone(),
            file: l.file.clone(),
            _dir: dir,
        }
    }

    fn tenant_id(&self, t: Option<&str>) -> String {
        t.unwrap_or(&self.default_tenant).to_string()
    }

    async fn run(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Check(c) => {
                let tenant = self.tenant_id(c.tenant.as_deref());
                let result = match c.at {
                    None => {
                        let req = pb::CheckRequest {
                            tenant_id: tenant,
                            feature: c.feature.clone(),
                            quantity: c.quantity,
                            intent: pb_intent(c.intent),
                            min_revision: None,
                        };
                        rpc(self.data.check(req).await)
                            .and_then(|r| r.decision.map(|d| observe_pb(&d)).ok_or_else(|| missing("decision")))
                    }
                    Some(at) => {
                        self.explain_decisions(tenant, vec![c.feature.clone()], at).await.map(|mut v| v.remove(0))
                    }
                };
                match settle(c.expect_error.as_deref(), result)? {
                    Some(o) => compare_decision(c, &o),
                    None => Ok(()),
                }
            }
            Step::CheckBatch(b) => {
                let tenant = self.tenant_id(b.tenant.as_deref());
                let result = match b.at {
                    None => {
                        let items = b
                            .items
                            .iter()
                            .map(|i| pb::CheckBatchItem {
                                feature: i.feature.clone(),
                                quantity: i.quantity,
                                intent: pb_intent(i.intent),
                            })
                            .collect();
                        let req = pb::CheckBatchRequest { tenant_id: tenant, items, min_revision: None };
                        rpc(self.data.check_batch(req).await)
                            .map(|r| r.decisions.iter().map(observe_pb).collect::<Vec<_>>())
                    }
                    Some(at) => {
                        self.explain_decisions(tenant, b.items.iter().map(|i| i.feature.clone()).collect(), at).await
                    }
                };
                match settle(b.expect_error.as_deref(), result)? {
                    Some(o) => compare_batch(b, &o),
                    None => Ok(()),
                }
            }
            Step::Explain(e) => {
                let req = pb::ExplainRequest {
                    tenant_id: self.tenant_id(e.tenant.as_deref()),
                    features: vec![],
                    at: e.at.map(|a| ts(a.at(self.t0))),
                };
                let result = rpc(self.data.explain(req).await).map(|r| {
                    let lc = r.lifecycle.unwrap_or_default();
                    let plan = r.plan.unwrap_or_default();
                    ObservedExplain {
                        known: r.known,
                        plan: plan.key,
                        plan_source: enum_name(
                            pb::PlanSource::try_from(plan.source).ok().map(|s| s.as_str_name()),
                            "PLAN_SOURCE_",
                        ),
                        phase: enum_name(pb::Phase::try_from(lc.phase).ok().map(|p| p.as_str_name()), "PHASE_"),
                        notices: observe_notices(&r.notices),
                        trial_days_left: lc.trial_days_left,
                    }
                });
                match settle(e.expect_error.as_deref(), result)? {
                    Some(o) => compare_explain(e, &o),
                    None => Ok(()),
                }
            }
            Step::Usage(u) => {
                let req = pb::UsageRequest {
                    tenant_id: self.tenant_id(u.tenant.as_deref()),
                    features: vec![u.feature.clone()],
                };
                let result = rpc(self.data.usage(req).await).and_then(|r| {
                    let line = r.usage.into_iter().next().ok_or_else(|| missing("usage line"))?;
                    Ok(ObservedUsage {
                        used: line.used,
                        limit: line.limit,
                        remaining: line.remaining,
                        unlimited: line.unlimited,
                    })
                });
                match settle(u.expect_error.as_deref(), result)? {
                    Some(o) => compare_usage(u, &o),
                    None => Ok(()),
                }
            }
            Step::RecordUsage(r) => {
                let req = pb::RecordUsageRequest {
                    tenant_id: self.tenant_id(r.tenant.as_deref()),
                    feature: r.feature.clone(),
                    value: r.value,
                    mode: match r.mode {
                        ModeArg::Delta => pb::UsageMode::Delta as i32,
                        ModeArg::Set => pb::UsageMode::Set as i32,
                    },
                    idempotency_key: r.key.clone().unwrap_or_default(),
                    enforce: r.enforce,
                };
                let result = rpc(self.data.record_usage(req).await).map(|o| ObservedRecord {
                    applied: o.applied,
                    duplicate: o.duplicate,
                    used: o.used,
                    remaining: o.remaining,
                });
                match settle(r.expect_error.as_deref(), result)? {
                    Some(o) => compare_record(r, &o),
                    None => Ok(()),
                }
            }
            Step::StripeSubscription(_) => {
                unreachable!("core_only scenarios are not run against the server")
            }
            admin => {
                let meta = admin.meta().unwrap_or_else(|| unreachable!("admin step"));
                let result = self.admin(admin, &meta).await;
                settle(meta.expect_error, result).map(|_| ())
            }
        }
    }

    /// Decisions from `Explain` at `at`, in the order of `features`.
    async fn explain_decisions(
        &mut self,
        tenant: String,
        features: Vec<String>,
        at: Rel,
    ) -> Result<Vec<Observed>, RpcError> {
        let n = features.len();
        let req = pb::ExplainRequest { tenant_id: tenant, features, at: Some(ts(at.at(self.t0))) };
        let r = rpc(self.data.explain(req).await)?;
        if r.features.len() != n {
            return Err(RpcError {
                code: "RUNNER".into(),
                message: format!("Explain returned {} features for {n} asked", r.features.len()),
            });
        }
        r.features
            .iter()
            .map(|f| f.decision.as_ref().map(observe_pb).ok_or_else(|| missing("features[].decision")))
            .collect()
    }

    async fn admin(&mut self, step: &Step, meta: &Meta<'_>) -> Result<(), RpcError> {
        let tenant_id = self.tenant_id(meta.tenant);
        let actor = meta.actor.unwrap_or(DEFAULT_ACTOR).to_string();
        let rationale = meta.rationale.map_or_else(|| format!("scenario step: {}", step.label()), str::to_string);
        let t0 = self.t0;
        let t = |r: Option<Rel>| r.map(|r| ts(r.at(t0)));
        let a = &mut self.admin;
        match step {
            Step::PutTenant(p) => rpc(a
                .put_tenant(authed(pb::PutTenantRequest {
                    tenant_id,
                    actor,
                    rationale,
                    stripe_customer_id: p.stripe_customer_id.clone().unwrap_or_default(),
                    trial_start: t(p.trial_start),
                    trial_end: t(p.trial_end),
                    archived: p.archived,
                }))
                .await)
            .map(drop),
            Step::AssignPlan(p) => rpc(a
                .assign_plan(authed(pb::AssignPlanRequest {
                    tenant_id,
                    actor,
                    rationale,
                    plan: p.plan.clone(),
                    expires_at: t(p.expires_at),
                }))
                .await)
            .map(drop),
            Step::UnassignPlan(p) => rpc(a
                .unassign_plan(authed(pb::UnassignPlanRequest { tenant_id, actor, rationale, plan: p.plan.clone() }))
                .await)
            .map(drop),
            Step::GrantAddon(g) => rpc(a
                .grant_add_on(authed(pb::GrantAddOnRequest {
                    tenant_id,
                    actor,
                    rationale,
                    addon: g.addon.clone(),
                    quantity: g.quantity.unwrap_or(0),
                    expires_at: t(g.expires_at),
                }))
                .await)
            .map(drop),
            Step::RevokeAddon(g) => rpc(a
                .revoke_add_on(authed(pb::RevokeAddOnRequest { tenant_id, actor, rationale, addon: g.addon.clone() }))
                .await)
            .map(drop),
            Step::SetOverride(o) => {
                use pb::set_override_request::Value as V;
                let value = match (o.enabled, o.number, o.unlimited) {
                    (Some(b), _, _) => Some(V::Enabled(b)),
                    (_, Some(n), _) => Some(V::Number(n)),
                    (_, _, Some(u)) => Some(V::Unlimited(u)),
                    _ => None,
                };
                let req = pb::SetOverrideRequest {
                    tenant_id,
                    actor,
                    rationale,
                    feature: o.feature.clone(),
                    value,
                    expires_at: t(o.expires_at),
                };
                rpc(a.set_override(authed(req)).await).map(drop)
            }
            Step::ClearOverride(o) => rpc(a
                .clear_override(authed(pb::ClearOverrideRequest {
                    tenant_id,
                    actor,
                    rationale,
                    feature: o.feature.clone(),
                }))
                .await)
            .map(drop),
            Step::ExtendTrial(e) => {
                use pb::extend_trial_request::Until;
                let until = match (e.days, e.trial_end) {
                    (Some(d), _) => Some(Until::Days(d)),
                    (_, Some(end)) => Some(Until::TrialEnd(ts(end.at(t0)))),
                    (None, None) => None,
                };
                rpc(a.extend_trial(authed(pb::ExtendTrialRequest { tenant_id, actor, rationale, until })).await)
                    .map(drop)
            }
            other => unreachable!("not an admin step: {}", other.label()),
        }
    }
}

fn missing(what: &str) -> RpcError {
    RpcError { code: "RUNNER".into(), message: format!("the response has no {what}") }
}

/// Path 2: every scenario (except `core_only` ones) against a real server over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_against_the_server() {
    run_servers(false).await;
}

/// Path 3: the same scenarios through a relay (sidecar mode) in front of the server: its
/// answers must be identical to the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_through_a_relay() {
    run_servers(true).await;
}

async fn run_servers(through_relay: bool) {
    let path = if through_relay { "relay" } else { "server" };
    let all = load_all();
    let mut out = Outcomes::default();
    let (mut assertions, mut ran, mut skipped) = (0, 0, 0);
    for l in &all {
        if l.scenario.core_only {
            println!("{path} {} — skipped: core_only (Stripe subscriptions cannot be created over gRPC yet)", l.file);
            skipped += 1;
            continue;
        }
        println!("{path} {} — {}", l.file, l.scenario.description);
        let mut world = ServerWorld::start(l, through_relay).await;
        for (i, step) in l.scenario.steps.iter().enumerate() {
            assertions += step.assertions();
            let r = world.run(step).await;
            out.report(PathKind::Server, &world.file, i, step, r);
        }
        if let Some(relay) = world.relay.take() {
            relay.stop().await.unwrap_or_else(|e| panic!("{}: the relay does not stop cleanly: {e}", l.file));
        }
        world.running.stop().await.unwrap_or_else(|e| panic!("{}: the server does not stop cleanly: {e}", l.file));
        ran += 1;
    }
    println!(
        "{path}: {ran} scenario file(s) run, {skipped} core-only skipped, {assertions} assertion(s), {} failure(s)",
        out.failures.len()
    );
    assert!(ran > 0, "no scenario ran against the {path}");
    out.finish(path);
}
