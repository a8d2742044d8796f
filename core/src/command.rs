//! Admin commands (SPEC §4, `AdminService`): every manual change to a tenant as data, with the
//! rules of what it may be ([`Command::validate`]) and what it does ([`Command::apply`]).
//!
//! The server builds a [`Command`] from a request, validates it, and hands it to the store, which
//! loads the tenant, calls [`Command::apply`] and saves the result and its [`AuditEntry`] in one
//! transaction. The scenario files run the very same two functions.

use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::catalog::{Catalog, Value};
use crate::lifecycle::{TrialExtension, extend_trial};
use crate::tenant::{
    AddOnGrant, Change, DAY, GrantOrigin, Override, PlanAssignment, TenantState, Trial, UnixTime, validate_tenant_id,
};

/// A refused input, naming the field: becomes `INVALID_ARGUMENT` at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

pub fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

/// Who makes a change, why, and when; every change is audited with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub actor: String,
    pub rationale: String,
    /// `admin`, or the Stripe event id for webhook-applied changes.
    pub origin: String,
    /// The instant of the change: "now" for every rule that compares with now.
    pub at: UnixTime,
}

impl Actor {
    /// A person (or tool) acting through the admin plane.
    pub fn admin(actor: &str, rationale: &str, at: UnixTime) -> Actor {
        Actor { actor: actor.to_string(), rationale: rationale.to_string(), origin: "admin".into(), at }
    }
}

pub const MAX_ACTOR_LEN: usize = 256;
pub const MAX_RATIONALE_LEN: usize = 4096;

/// A non-empty string field the request must carry.
pub fn required(field: &'static str, v: &str) -> Result<(), Invalid> {
    if v.trim().is_empty() { Err(invalid(field, "is required")) } else { Ok(()) }
}

/// Every manual change names who made it and why (SPEC §4).
pub fn check_actor(actor: &str, rationale: &str) -> Result<(), Invalid> {
    required("actor", actor)?;
    required("rationale", rationale)?;
    text("actor", actor)?;
    text("rationale", rationale)
}

/// A text field the store keeps. PostgreSQL cannot store NUL in text and SQLite can: refusing
/// it at the edge keeps both stores alike and keeps a NUL from failing every retry of a write.
pub fn text(field: &'static str, v: &str) -> Result<(), Invalid> {
    if v.contains('\0') { Err(invalid(field, "must not contain a NUL character")) } else { Ok(()) }
}

/// The latest instant a request may name, 9999-12-31T23:59:59Z: later dates overflow date
/// arithmetic and print badly; nothing we sell lasts that long.
pub const MAX_TIME: UnixTime = 253_402_300_799;

/// How far after the change an extended trial may end.
pub const MAX_TRIAL_AHEAD_DAYS: i64 = 3650;

/// An instant a request names: between 1970-01-01 and [`MAX_TIME`].
pub fn time(field: &'static str, t: UnixTime) -> Result<UnixTime, Invalid> {
    if (0..=MAX_TIME).contains(&t) { Ok(t) } else { Err(invalid(field, "must lie between 1970-01-01 and 9999-12-31")) }
}

/// How much of an offending value an error message quotes.
pub const QUOTE_LEN: usize = 64;

/// An input value quoted in an error message: a short prefix only, so that a huge value is not
/// echoed back (a 1 MB name in `grpc-message` breaks clients' metadata limits).
pub fn quote(v: &str) -> String {
    match v.char_indices().nth(QUOTE_LEN) {
        None => format!("`{}`", v.escape_debug()),
        Some((cut, _)) => format!("`{}…` ({} bytes)", v[..cut].escape_debug(), v.len()),
    }
}

/// A change to one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Command {
    /// Create or update the tenant record; `None` fields are left as they are.
    PutTenant {
        stripe_customer_id: Option<String>,
        trial: Option<Trial>,
        archived: Option<bool>,
    },
    AssignPlan {
        plan: String,
        expires_at: Option<UnixTime>,
    },
    /// `None` removes every manual assignment.
    UnassignPlan {
        plan: Option<String>,
    },
    ExtendTrial {
        #[serde(skip)]
        extension: TrialExtension,
    },
    GrantAddOn {
        addon: String,
        quantity: i64,
        expires_at: Option<UnixTime>,
    },
    /// Revokes the manual grants of the add-on; Stripe grants follow their subscription.
    RevokeAddOn {
        addon: String,
    },
    SetOverride {
        feature: String,
        value: Value,
        expires_at: Option<UnixTime>,
    },
    ClearOverride {
        feature: String,
    },
}

/// What the audit log records of one applied change.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub action: &'static str,
    pub before: Json,
    pub after: Json,
}

/// The trial a `PutTenant` asks for: an end without a start is refused; a start without an end
/// gets the catalog's trial length.
pub fn trial(catalog: &Catalog, start: Option<UnixTime>, end: Option<UnixTime>) -> Result<Option<Trial>, Invalid> {
    let start = start.map(|t| time("trial_start", t)).transpose()?;
    let end = end.map(|t| time("trial_end", t)).transpose()?;
    match (start, end) {
        (Some(start), Some(end)) => Ok(Some(Trial { start, end })),
        (Some(start), None) => Ok(Some(Trial { start, end: start + catalog.lifecycle.trial_days * DAY })),
        (None, Some(_)) => Err(invalid("trial_start", "is required when trial_end is set")),
        (None, None) => Ok(None),
    }
}

/// A grant's quantity: unset (0) means one.
pub fn addon_quantity(q: i64) -> i64 {
    if q == 0 { 1 } else { q }
}

fn to_json<T: Serialize>(v: &T) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

fn tenant_json(s: &TenantState) -> Json {
    json!({ "stripe_customer_id": s.stripe_customer_id, "trial": s.trial, "archived": s.archived })
}

/// Insert or replace the element with `item`'s key, keeping the list ordered by key (the order
/// the store loads it in, so a state is the same whether it was stored or just computed).
pub(crate) fn upsert_by<T, K: Ord>(list: &mut Vec<T>, item: T, key: impl Fn(&T) -> K) {
    let k = key(&item);
    // Found by equality, not by binary search: a list loaded in another collation's order
    // still never gets a second element with the same key.
    match list.iter().position(|x| key(x) == k) {
        Some(i) => list[i] = item,
        None => {
            let i = list.partition_point(|x| key(x) < k);
            list.insert(i, item);
        }
    }
}

fn grant_key(g: &AddOnGrant) -> (String, String) {
    (g.addon.clone(), g.origin.key())
}

impl Command {
    pub fn action(&self) -> &'static str {
        match self {
            Command::PutTenant { .. } => "put_tenant",
            Command::AssignPlan { .. } => "assign_plan",
            Command::UnassignPlan { .. } => "unassign_plan",
            Command::ExtendTrial { .. } => "extend_trial",
            Command::GrantAddOn { .. } => "grant_addon",
            Command::RevokeAddOn { .. } => "revoke_addon",
            Command::SetOverride { .. } => "set_override",
            Command::ClearOverride { .. } => "clear_override",
        }
    }

    /// Fields the command itself must carry; checked before who and why, as the API reads.
    pub fn check_required(&self) -> Result<(), Invalid> {
        match self {
            Command::AssignPlan { plan, .. } => required("plan", plan),
            Command::GrantAddOn { addon, .. } | Command::RevokeAddOn { addon } => required("addon", addon),
            Command::SetOverride { feature, .. } | Command::ClearOverride { feature } => required("feature", feature),
            Command::PutTenant { .. } | Command::UnassignPlan { .. } | Command::ExtendTrial { .. } => Ok(()),
        }
    }

    /// Every text the change would store — who, why, and the command's own fields — carries no
    /// NUL (see [`text`]). Part of [`Command::validate`]; the store checks it again, alike on
    /// every backend, for callers that did not validate.
    pub fn check_text(&self, by: &Actor) -> Result<(), Invalid> {
        text("actor", &by.actor)?;
        text("rationale", &by.rationale)?;
        match self {
            Command::PutTenant { stripe_customer_id, .. } => {
                stripe_customer_id.as_deref().map_or(Ok(()), |c| text("stripe_customer_id", c))
            }
            Command::AssignPlan { plan, .. } => text("plan", plan),
            Command::UnassignPlan { plan } => plan.as_deref().map_or(Ok(()), |p| text("plan", p)),
            Command::GrantAddOn { addon, .. } | Command::RevokeAddOn { addon } => text("addon", addon),
            Command::SetOverride { feature, .. } | Command::ClearOverride { feature } => text("feature", feature),
            Command::ExtendTrial { .. } => Ok(()),
        }
    }

    /// Whether this change may be made to `tenant_id` by `by` (at `by.at`): required fields, who
    /// and why, the tenant id, then the catalog (keys exist, values fit, expiries lie ahead). The
    /// rules need no stored state, so the shell checks before it opens a transaction and a relay
    /// before it forwards.
    pub fn validate(&self, catalog: &Catalog, tenant_id: &str, by: &Actor) -> Result<(), Invalid> {
        self.check_required()?;
        check_actor(&by.actor, &by.rationale)?;
        self.check_text(by)?;
        validate_tenant_id(tenant_id).map_err(|e| invalid("tenant_id", e.to_string()))?;
        if by.actor.len() > MAX_ACTOR_LEN || by.rationale.len() > MAX_RATIONALE_LEN {
            return Err(invalid("rationale", "actor (256) or rationale (4096 bytes) too long"));
        }
        self.check_catalog(catalog, by.at)
    }

    fn check_catalog(&self, catalog: &Catalog, now: UnixTime) -> Result<(), Invalid> {
        let future = |field: &'static str, t: Option<UnixTime>| match t {
            Some(t) if t <= now => Err(invalid(field, "must be in the future")),
            Some(t) => time(field, t).map(|_| ()),
            None => Ok(()),
        };
        let plan =
            |p: &str| catalog.plan(p).map(|_| ()).ok_or_else(|| invalid("plan", format!("unknown plan {}", quote(p))));
        let addon = |a: &str| {
            catalog.addon(a).map(|_| ()).ok_or_else(|| invalid("addon", format!("unknown add-on {}", quote(a))))
        };
        let feature =
            |f: &str| catalog.feature(f).ok_or_else(|| invalid("feature", format!("unknown feature {}", quote(f))));
        match self {
            Command::PutTenant { stripe_customer_id, trial, .. } => {
                if stripe_customer_id.as_ref().is_some_and(|c| c.len() > 255 || c.chars().any(char::is_whitespace)) {
                    return Err(invalid("stripe_customer_id", "at most 255 characters, no whitespace"));
                }
                if trial.is_some_and(|t| t.end < t.start) {
                    return Err(invalid("trial_end", "must not be before trial_start"));
                }
                Ok(())
            }
            Command::AssignPlan { plan: p, expires_at } => plan(p).and_then(|()| future("expires_at", *expires_at)),
            Command::UnassignPlan { plan: p } => p.as_deref().map_or(Ok(()), plan),
            Command::ExtendTrial { extension } => match extension {
                TrialExtension::Days(d) if *d <= 0 || *d > 3650 => Err(invalid("days", "must be between 1 and 3650")),
                TrialExtension::Days(_) => Ok(()),
                TrialExtension::Until(t) => future("trial_end", Some(*t)),
            },
            Command::GrantAddOn { addon: a, quantity, expires_at } => {
                addon(a)?;
                if !(1..=1_000_000).contains(quantity) {
                    return Err(invalid("quantity", "must be between 1 and 1000000"));
                }
                future("expires_at", *expires_at)
            }
            Command::RevokeAddOn { addon: a } => addon(a),
            Command::SetOverride { feature: key, value, expires_at } => {
                let f = feature(key)?;
                if !value.fits(f.kind) {
                    let kind = f.kind.name();
                    return Err(invalid("value", format!("`{value}` does not fit the {kind} feature `{key}`")));
                }
                future("expires_at", *expires_at)
            }
            Command::ClearOverride { feature: key } => feature(key).map(|_| ()),
        }
    }

    /// The rules that need the tenant's stored state, checked by the store before it applies the
    /// change in the same transaction: an extended trial ends at most [`MAX_TRIAL_AHEAD_DAYS`]
    /// after the change, however often it is extended.
    pub fn check_state(&self, state: &TenantState, by: &Actor) -> Result<(), Invalid> {
        if let Command::ExtendTrial { extension } = self {
            let end = crate::lifecycle::extend_trial(state.trial, *extension, by.at).end;
            if end > by.at.saturating_add(MAX_TRIAL_AHEAD_DAYS * DAY) {
                return Err(invalid("days", format!("a trial may end at most {MAX_TRIAL_AHEAD_DAYS} days from now")));
            }
        }
        Ok(())
    }

    /// Apply a validated change: the tenant's next state (revision + 1, last change = `by`) and
    /// what the audit log records of it. `state.revision` is the revision before the change; a
    /// tenant at revision 0 did not exist yet, so it has no "before".
    pub fn apply(&self, state: &mut TenantState, by: &Actor) -> AuditEntry {
        let (before, after) = self.change(state, by);
        stamp(state, by);
        AuditEntry { action: self.action(), before, after }
    }

    /// The change itself; returns the audit's (before, after).
    fn change(&self, s: &mut TenantState, by: &Actor) -> (Json, Json) {
        match self {
            Command::PutTenant { stripe_customer_id, trial, archived } => {
                put_tenant(s, stripe_customer_id.as_deref(), *trial, *archived)
            }
            Command::ExtendTrial { extension } => {
                let before = to_json(&s.trial);
                let trial = extend_trial(s.trial, *extension, by.at);
                s.trial = Some(trial);
                (before, to_json(&trial))
            }
            Command::AssignPlan { plan, expires_at } => {
                let before = to_json(&s.plan_assignments.iter().find(|a| &a.plan == plan));
                let after = PlanAssignment {
                    plan: plan.clone(),
                    actor: by.actor.clone(),
                    rationale: by.rationale.clone(),
                    assigned_at: by.at,
                    expires_at: *expires_at,
                };
                (before, upsert_json(&mut s.plan_assignments, after, |a| a.plan.clone()))
            }
            Command::UnassignPlan { plan } => {
                let hit = |a: &PlanAssignment| plan.as_ref().is_none_or(|p| &a.plan == p);
                let before = to_json(&s.plan_assignments.iter().filter(|a| hit(a)).collect::<Vec<_>>());
                s.plan_assignments.retain(|a| !hit(a));
                (before, json!([]))
            }
            Command::GrantAddOn { addon, quantity, expires_at } => {
                let before = to_json(&manual_grant(s, addon));
                let after = AddOnGrant {
                    addon: addon.clone(),
                    quantity: *quantity,
                    origin: GrantOrigin::Manual,
                    actor: by.actor.clone(),
                    rationale: by.rationale.clone(),
                    granted_at: by.at,
                    expires_at: *expires_at,
                };
                (before, upsert_json(&mut s.addon_grants, after, grant_key))
            }
            Command::RevokeAddOn { addon } => {
                let before = to_json(&manual_grant(s, addon));
                s.addon_grants.retain(|g| !(&g.addon == addon && g.origin == GrantOrigin::Manual));
                (before, Json::Null)
            }
            Command::SetOverride { feature, value, expires_at } => set_override(s, feature, *value, *expires_at, by),
            Command::ClearOverride { feature } => {
                let before = to_json(&s.overrides.iter().find(|o| &o.feature == feature));
                s.overrides.retain(|o| &o.feature != feature);
                (before, Json::Null)
            }
        }
    }
}

/// `PutTenant`: `None` fields stay as they are; a tenant at revision 0 has no "before".
fn put_tenant(
    s: &mut TenantState,
    customer: Option<&str>,
    trial: Option<Trial>,
    archived: Option<bool>,
) -> (Json, Json) {
    let before = if s.revision > 0 { tenant_json(s) } else { Json::Null };
    if let Some(c) = customer {
        s.stripe_customer_id = (!c.is_empty()).then(|| c.to_string());
    }
    if trial.is_some() {
        s.trial = trial;
    }
    if let Some(a) = archived {
        s.archived = a;
    }
    (before, tenant_json(s))
}

fn set_override(
    s: &mut TenantState,
    feature: &str,
    value: Value,
    expires_at: Option<UnixTime>,
    by: &Actor,
) -> (Json, Json) {
    let before = to_json(&s.overrides.iter().find(|o| o.feature == feature));
    let after = Override {
        feature: feature.to_string(),
        value,
        actor: by.actor.clone(),
        rationale: by.rationale.clone(),
        set_at: by.at,
        expires_at,
    };
    (before, upsert_json(&mut s.overrides, after, |o| o.feature.clone()))
}

/// [`upsert_by`], returning the inserted element as the audit's "after".
fn upsert_json<T: Serialize, K: Ord>(list: &mut Vec<T>, item: T, key: impl Fn(&T) -> K) -> Json {
    let after = to_json(&item);
    upsert_by(list, item, key);
    after
}

/// Every applied change: the tenant exists, its revision moves by one, `by` made the change.
pub(crate) fn stamp(state: &mut TenantState, by: &Actor) {
    state.known = true;
    state.revision += 1;
    state.last_change =
        Some(Change { actor: by.actor.clone(), at: by.at, rationale: by.rationale.clone(), origin: by.origin.clone() });
}

fn manual_grant<'a>(s: &'a TenantState, addon: &str) -> Option<&'a AddOnGrant> {
    s.addon_grants.iter().find(|g| g.addon == addon && g.origin == GrantOrigin::Manual)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(at: UnixTime) -> Actor {
        Actor::admin("ops", "because", at)
    }

    #[test]
    fn apply_creates_then_updates() {
        let mut s = TenantState::unknown("acme");
        let put = Command::PutTenant { stripe_customer_id: Some("cus_1".into()), trial: None, archived: None };
        let a = put.apply(&mut s, &by(10));
        assert_eq!(a.before, Json::Null, "a new tenant has no before");
        assert!(s.known);
        assert_eq!(s.revision, 1);
        let a =
            Command::PutTenant { stripe_customer_id: None, trial: None, archived: Some(true) }.apply(&mut s, &by(11));
        assert_eq!(a.before["stripe_customer_id"], "cus_1");
        assert_eq!(s.stripe_customer_id.as_deref(), Some("cus_1"), "None leaves a field as it is");
        assert!(s.archived);
        assert_eq!(s.revision, 2);
        assert_eq!(s.last_change.as_ref().map(|c| c.at), Some(11));
    }

    #[test]
    fn lists_stay_ordered_by_key() {
        let mut s = TenantState::unknown("acme");
        for p in ["pro", "enterprise", "premium"] {
            Command::AssignPlan { plan: p.into(), expires_at: None }.apply(&mut s, &by(1));
        }
        let plans: Vec<_> = s.plan_assignments.iter().map(|a| a.plan.as_str()).collect();
        assert_eq!(plans, ["enterprise", "premium", "pro"]);
        Command::AssignPlan { plan: "pro".into(), expires_at: Some(9) }.apply(&mut s, &by(2));
        assert_eq!(s.plan_assignments.len(), 3, "re-assigning replaces");
        Command::UnassignPlan { plan: None }.apply(&mut s, &by(3));
        assert!(s.plan_assignments.is_empty());
    }

    #[test]
    fn revoke_leaves_stripe_grants() {
        let mut s = TenantState::unknown("acme");
        s.addon_grants.push(AddOnGrant {
            addon: "teams".into(),
            quantity: 1,
            origin: GrantOrigin::Stripe { subscription_id: "sub".into(), item_id: "si".into() },
            actor: "stripe".into(),
            rationale: String::new(),
            granted_at: 0,
            expires_at: None,
        });
        Command::GrantAddOn { addon: "teams".into(), quantity: 2, expires_at: None }.apply(&mut s, &by(1));
        assert_eq!(s.addon_grants.len(), 2);
        Command::RevokeAddOn { addon: "teams".into() }.apply(&mut s, &by(2));
        assert_eq!(s.addon_grants.len(), 1);
        assert_ne!(s.addon_grants[0].origin, GrantOrigin::Manual);
    }

    #[test]
    fn actor_and_rationale_are_required() {
        let c = Command::UnassignPlan { plan: None };
        let catalog = Catalog::from_toml(include_str!("../../examples/catalog.toml"), &|_| None).expect("valid");
        assert_eq!(c.validate(&catalog, "acme", &Actor::admin("", "x", 0)).unwrap_err().field, "actor");
        assert_eq!(c.validate(&catalog, "acme", &Actor::admin("a", " ", 0)).unwrap_err().field, "rationale");
        assert_eq!(c.validate(&catalog, "a b", &Actor::admin("a", "b", 0)).unwrap_err().field, "tenant_id");
        assert!(c.validate(&catalog, "acme", &Actor::admin("a", "b", 0)).is_ok());
    }
}
