//! The catalog loader: `Catalog::from_toml` on arbitrary text (the server reads the file as
//! UTF-8, so other bytes never reach it), with a deterministic environment for `${VAR}` price
//! ids. A catalog it accepts must then be usable: every tenant state that the admin plane can
//! build from the catalog's own plans, add-ons and features resolves, decides and explains
//! without a panic, in both editions.

#![no_main]

use std::sync::Arc;

use entitlements::catalog::{Catalog, Edition, Value};
use entitlements::command::{Actor, Command};
use entitlements::tenant::{DAY, Trial};
use entitlements_fuzz::{NOW, exercise, unknown_tenant};
use libfuzzer_sys::fuzz_target;

/// `${NAME}` lookups: unset, a price id, or empty, by the name's length.
fn env(name: &str) -> Option<String> {
    match name.len() % 3 {
        0 => None,
        1 => Some(format!("price_{name}")),
        _ => Some(String::new()),
    }
}

/// Apply `c` to the state if the admin plane would accept it (as `Service::mutate` does).
fn admin(state: &mut entitlements::tenant::TenantState, catalog: &Catalog, c: Command) {
    let by = Actor::admin("fuzz", "fuzzing", NOW);
    if c.validate(catalog, &state.tenant_id.clone(), &by).is_ok() {
        c.apply(state, &by);
    }
}

fn use_catalog(catalog: &Arc<Catalog>) {
    let mut state = unknown_tenant("acme");
    exercise(catalog, &state, NOW, "no_such_feature", 1, 0);
    admin(
        &mut state,
        catalog,
        Command::PutTenant {
            stripe_customer_id: None,
            trial: Some(Trial { start: NOW - DAY, end: NOW + DAY }),
            archived: None,
        },
    );
    exercise(catalog, &state, NOW, "", 0, 1);
    for plan in catalog.plans.iter().take(4) {
        let mut s = state.clone();
        admin(&mut s, catalog, Command::AssignPlan { plan: plan.key.clone(), expires_at: None });
        exercise(catalog, &s, NOW + 3 * DAY, "", 2, 3);
    }
    for addon in catalog.addons.iter().take(4) {
        admin(&mut state, catalog, Command::GrantAddOn { addon: addon.key.clone(), quantity: 2, expires_at: None });
    }
    for f in catalog.features.iter().take(8) {
        let value = if f.kind.is_numeric() { Value::Number(7) } else { Value::Bool(true) };
        admin(&mut state, catalog, Command::SetOverride { feature: f.key.clone(), value, expires_at: Some(NOW + DAY) });
    }
    exercise(catalog, &state, NOW, "", 1, 5);
    // Past the trial, the hard lock and the archive horizon.
    exercise(catalog, &state, NOW + 400 * DAY, "", 1, 0);
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    match Catalog::from_toml(src, &env) {
        Ok(catalog) => {
            let catalog = Arc::new(catalog);
            use_catalog(&catalog);
            use_catalog(&Arc::new(Catalog::clone(&catalog).with_edition(Edition::Ce)));
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "a refused catalog names at least one problem");
            let _ = e.to_string();
        }
    }
});
