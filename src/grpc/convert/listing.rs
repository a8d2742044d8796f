//! `ListTenants`: the request's filters and page token in, one page of tenant rows out.

use super::{opt_from_ts, opt_ts};
use crate::command::{Invalid, invalid};
use crate::lifecycle::Phase;
use crate::listing::{TenantFilter, TenantRow};
use crate::pb;
use crate::service::TenantPage;

/// The default page when the request names none.
const DEFAULT_PAGE: u32 = 100;

/// A phase to filter by; UNSPECIFIED is "any phase".
fn phase(raw: i32) -> Result<Option<Phase>, Invalid> {
    Ok(Some(match pb::Phase::try_from(raw) {
        Ok(pb::Phase::Unspecified) => return Ok(None),
        Ok(pb::Phase::Active) => Phase::Active,
        Ok(pb::Phase::Trialing) => Phase::Trialing,
        Ok(pb::Phase::TrialExpired) => Phase::TrialExpired,
        Ok(pb::Phase::HardLocked) => Phase::HardLocked,
        Ok(pb::Phase::Archived) => Phase::Archived,
        Ok(pb::Phase::PastDue) => Phase::PastDue,
        Err(_) => return Err(invalid("phase", format!("unknown phase {raw}"))),
    }))
}

/// The filter, the tenant to continue after, and the page size a request asks for.
pub fn list_query(r: &pb::ListTenantsRequest) -> Result<(TenantFilter, Option<&str>, u32), Invalid> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let filter = TenantFilter {
        phase: phase(r.phase)?,
        plan: nonempty(&r.plan),
        addon: nonempty(&r.addon),
        past_due: r.past_due,
        trial_ending_before: opt_from_ts(&r.trial_ending_before),
        changed_since: opt_from_ts(&r.changed_since),
    };
    let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
    let size = if r.page_size <= 0 { DEFAULT_PAGE } else { u32::try_from(r.page_size).unwrap_or(DEFAULT_PAGE) };
    Ok((filter, after, size))
}

fn summary(row: TenantRow, stripe_customer_id: Option<String>) -> pb::TenantSummary {
    pb::TenantSummary {
        tenant_id: row.tenant_id,
        revision: row.revision,
        plan: row.plan,
        phase: pb::Phase::from(row.phase) as i32,
        past_due: row.past_due,
        trial_end: opt_ts(row.trial_end),
        addons: row.addons,
        notices: row.notices.iter().map(pb::Notice::from).collect(),
        updated_at: opt_ts(row.updated_at),
        stripe_customer_id: stripe_customer_id.unwrap_or_default(),
    }
}

pub fn tenants_page(page: TenantPage) -> pb::ListTenantsResponse {
    pb::ListTenantsResponse {
        tenants: page.rows.into_iter().map(|(row, customer)| summary(row, customer)).collect(),
        next_page_token: page.next_after.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_from_the_request() {
        let r = pb::ListTenantsRequest {
            phase: pb::Phase::PastDue as i32,
            plan: "pro".into(),
            past_due: Some(true),
            trial_ending_before: Some(prost_types::Timestamp { seconds: 99, nanos: 0 }),
            page_token: "acme".into(),
            ..Default::default()
        };
        let (f, after, size) = list_query(&r).expect("valid");
        assert_eq!(f.phase, Some(Phase::PastDue));
        assert_eq!(
            (f.plan.as_deref(), f.addon, f.past_due, f.trial_ending_before),
            (Some("pro"), None, Some(true), Some(99))
        );
        assert_eq!((after, size), (Some("acme"), DEFAULT_PAGE));
        let bad = pb::ListTenantsRequest { phase: 42, ..Default::default() };
        assert_eq!(list_query(&bad).map(|_| ()).unwrap_err().field, "phase");
    }
}
