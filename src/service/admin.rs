//! The admin plane's commands and reads: validate a [`Command`] with the core, commit it through
//! the store, invalidate; read tenant state and the audit log.

use super::{Service, ServiceError, check_tenant};
use crate::clock::unix_now;
use crate::command::{Actor, Command};
use crate::store::{AuditRecord, Committed};
use crate::tenant::TenantState;

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
}
