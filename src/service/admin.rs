//! The admin plane's commands and reads: validate a [`Command`] with the core, commit it through
//! the store, invalidate; read tenant state and the audit log.

use super::{Service, ServiceError, check_tenant, invalid};
use crate::clock::unix_now;
use crate::command::{Actor, Command};
use crate::listing::{self, TenantFilter, TenantRow};
use crate::store::{AuditRecord, Committed};
use crate::tenant::TenantState;

/// Tenants read from the store per round trip while listing.
const LIST_BATCH: u32 = 500;
/// Tenants one `ListTenants` call looks at, at most: a filter that matches rarely answers a short
/// page with a next token instead of scanning every tenant in one call.
const LIST_SCAN_BUDGET: usize = 20_000;
pub const MAX_LIST_PAGE: u32 = 1_000;

/// One page of a tenant list: each row with the tenant's Stripe customer (admin-plane data).
pub struct TenantPage {
    pub rows: Vec<(TenantRow, Option<String>)>,
    /// The last tenant looked at, when more may follow.
    pub next_after: Option<String>,
}

impl Service {
    /// Validate (the core's rules), commit, invalidate. Returns the committed revision.
    pub async fn mutate(
        &self,
        tenant: &str,
        command: Command,
        actor: &str,
        rationale: &str,
    ) -> Result<Committed, ServiceError> {
        let by = Actor::admin(actor, rationale, unix_now());
        command.validate(&self.catalog, tenant, &by)?;
        let committed = self.stores.tenants.mutate(tenant, &command, &by).await?;
        self.invalidate(tenant, committed.revision).await;
        // A tenant that now claims a Stripe customer gets the events that waited for it.
        if let Command::PutTenant { stripe_customer_id: Some(customer), .. } = &command
            && !customer.is_empty()
        {
            self.apply_pending(customer).await?;
        }
        Ok(committed)
    }

    pub async fn tenant(&self, tenant: &str) -> Result<TenantState, ServiceError> {
        check_tenant(tenant)?;
        Ok(self.stores.tenants.load(tenant).await?)
    }

    pub async fn audit(
        &self,
        tenant: &str,
        page_size: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        check_tenant(tenant)?;
        Ok(self.stores.audit.audit(tenant, page_size.clamp(1, 500), before_id).await?)
    }

    /// Tenants after `after` (in id order) that match `filter` now, resolved by the core.
    pub async fn list_tenants(
        &self,
        filter: &TenantFilter,
        after: Option<&str>,
        page_size: u32,
    ) -> Result<TenantPage, ServiceError> {
        filter.validate(&self.catalog)?;
        if let Some(a) = after {
            check_tenant(a)
                .map_err(|_| ServiceError::from(invalid("page_token", "not a token from a previous page")))?;
        }
        let dir = self.stores.directory.as_ref().ok_or_else(|| {
            ServiceError::from(invalid("request", "a relay does not list tenants: ask the central service"))
        })?;
        let (page_size, now) = (page_size.clamp(1, MAX_LIST_PAGE) as usize, unix_now());
        let mut page = TenantPage { rows: Vec::new(), next_after: after.map(str::to_string) };
        let mut scanned = 0;
        loop {
            let batch = dir.tenants_after(page.next_after.as_deref(), LIST_BATCH).await?;
            let last_batch = batch.len() < LIST_BATCH as usize;
            for state in batch {
                scanned += 1;
                page.next_after = Some(state.tenant_id.clone());
                let row = listing::row(&self.catalog, &state, now);
                if filter.matches(&row) {
                    page.rows.push((row, state.stripe_customer_id));
                    if page.rows.len() == page_size {
                        return Ok(page);
                    }
                }
            }
            if last_batch {
                page.next_after = None;
                return Ok(page);
            }
            if scanned >= LIST_SCAN_BUDGET {
                return Ok(page);
            }
        }
    }
}
