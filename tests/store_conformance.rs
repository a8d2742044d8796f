//! Backend conformance suite for the store (SPEC §6, issue 4): one set of cases, grouped by
//! capability category, run unchanged against every backend that implements the category —
//! as SpiceDB's datastore tests select categories per backend. A test is named
//! `<backend>::<category>::<case>`, e.g. `relay::tenants::assign_and_unassign_plans`.
//!
//! Categories (the `category!` macro lists their cases; `cases::<category>` holds them):
//!
//! | category          | exercises                                                               |
//! |-------------------|-------------------------------------------------------------------------|
//! | `tenants`         | `TenantStore`: load, mutate (and the audit record it writes), ping,     |
//! |                   | revisions, concurrent mutations                                         |
//! | `audit`           | `AuditLog`: what each change records, paging                            |
//! | `usage`           | `UsageStore` as any backend offers it: deltas, gauges, idempotency,     |
//! |                   | overflow, concurrent duplicate keys                                     |
//! | `usage_counter`   | the counter statement itself: enforcement against the report's limit,   |
//! |                   | rollover to the report's period (a relay's upstream computes both)      |
//! | `stripe`          | `StripeLog`                                                             |
//! | `shared_database` | two stores migrating and sharing one database                           |
//! | `collation`       | lists in byte-wise key order, with keys no catalog may name             |
//! | `text`            | text no backend can keep (NUL) is refused as the caller's fault, alike  |
//! | `directory`       | `TenantDirectory`: whole tenant states a page at a time, in id order    |
//! | `outbox`          | `OutboxStore`: lifecycle notices once when due (also with two stores    |
//! |                   | emitting at once), webhook deliveries leased in order, logged, redone   |
//!
//! Backends × categories:
//!
//! | backend    | store under test                                         | categories         |
//! |------------|----------------------------------------------------------|--------------------|
//! | `sqlite`   | `SqlStore` on a fresh temporary file                     | all                |
//! | `postgres` | `SqlStore` on a fresh database on the server named by    | all (`#[ignore]`d) |
//! |            | `ENTITLEMENTS_TEST_POSTGRES_URL`                         |                    |
//! | `relay`    | `relay::UpstreamStore` against a central server started  | `tenants`, `audit`,|
//! |            | in-process (fresh SQLite file, admin token, the catalog  | `usage`, `text`    |
//! |            | of [`harness::relay_catalog`])                           |                    |
//!
//! The relay has no Stripe log (webhooks land on the central service), no tenant directory
//! (tenant lists are the central service's admin plane) and no outbox (the central service makes
//! notices and sends webhooks), runs no SQL of its own
//! (`usage_counter`, `shared_database`) and can only name catalog keys (`collation`).
//!
//! A plain `cargo test --test store_conformance` runs the SQLite and relay tests and lists the
//! PostgreSQL ones as ignored. Run those with a server they may create databases on (when run,
//! a missing `ENTITLEMENTS_TEST_POSTGRES_URL` fails them):
//!
//! ```sh
//! cargo test --test store_conformance                      # sqlite::*, relay::*
//! cargo test --test store_conformance -- relay::usage      # one backend's category
//! ENTITLEMENTS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test --test store_conformance -- --ignored     # postgres::*
//! ```
//!
//! Every case receives a [`harness::Db`]: the store under test by concern (`tenants`, `usage`,
//! `audit`, and `stripe` where the backend has one), so a case only exercises the traits of its
//! category. A case may read another concern to observe its own (the audit record a mutation
//! writes, usage not bumping a revision): every backend serves tenants, usage and audit.
//!
//! Portability. Through a relay the central server validates each command against its catalog
//! (keys exist, expiries lie ahead), stamps changes with its own clock (`at` of audit rows,
//! `assigned_at`, `granted_at`, `set_at`, trial starts, the last change) and its own origin
//! (`admin`), and recomputes usage reports (its period; its plan's limit when the relay asks for
//! enforcement). So the cases that run on the relay only name keys of that catalog, date their
//! changes from [`harness::Db::t0`] (the fixed `T0` on SQL, the real clock on the relay, so that
//! expiries lie ahead), compare stamped values through [`harness::Db::stamped`] (exact on SQL,
//! "the central's now" on the relay) and enforce only the limits that catalog's default plan
//! gives. What they check on SQLite and PostgreSQL is unchanged. Where a relay deviates from a
//! database store, the case says so and pins what the relay does (`Relay deviation:`).

use std::collections::BTreeSet;

use entitlements::billing::{Fact, SubscriptionFacts, Translation};
use entitlements::catalog::{Interval, Value};
use entitlements::command::{Actor, Command};
use entitlements::store::sql::SqlStore;
use entitlements::store::{
    AuditLog, AuditRecord, Replay, StoreError, StripeLog, StripeStatus, TenantStore, TrialExtension, UsageMode,
    UsageReport,
};
use entitlements::stripe::Envelope;
use entitlements::tenant::{
    AddOnGrant, DAY, GrantOrigin, Subscription, SubscriptionStatus, TenantState, Trial, UnixTime,
};
use serde_json::json;

use crate::harness::{API_CALLS_LIMIT, SEATS_LIMIT};

mod common;

/// One test per case of a category, run by `harness::$run`: `<backend>::<category>::<case>`.
macro_rules! category_tests {
    ($run:ident $attrs:tt $category:ident: $($case:ident),+ $(,)?) => {
        pub mod $category {
            $(category_tests!(@case $run $attrs $category $case);)+
        }
    };
    (@case $run:ident [$(#[$attr:meta])*] $category:ident $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $case() {
            crate::harness::$run(crate::cases::$category::$case).await;
        }
    };
}

/// The categories and their cases (`cases::<category>::<case>`).
macro_rules! category {
    ($run:ident $attrs:tt tenants) => {
        category_tests!($run $attrs tenants:
            ping,
            unknown_tenant_loads_as_unknown,
            put_tenant_creates_and_updates_partially,
            mutation_on_unknown_tenant_creates_it,
            assign_and_unassign_plans,
            extend_trial_by_days_and_until,
            grant_and_revoke_addons,
            set_and_clear_overrides,
            revision_bumps_by_exactly_one_per_mutation,
            concurrent_mutations_get_distinct_revisions,
        );
    };
    ($run:ident $attrs:tt audit) => {
        category_tests!($run $attrs audit:
            audit_records_every_mutation,
            audit_pages_newest_first,
        );
    };
    ($run:ident $attrs:tt usage) => {
        category_tests!($run $attrs usage:
            usage_delta_accumulates,
            usage_set_replaces_the_gauge,
            usage_idempotency_returns_the_original_result,
            usage_idempotency_keys_are_scoped_to_tenant_and_feature,
            usage_overflow_is_an_error,
            concurrent_duplicate_keys_apply_once,
        );
    };
    // SQL only: the report's `limit` and `period_start` are the statement's input; a relay's
    // upstream replaces both with its own (its plan's limit, the current period).
    ($run:ident $attrs:tt usage_counter) => {
        category_tests!($run $attrs usage_counter:
            usage_enforce_refuses_over_limit,
            usage_period_rollover,
            concurrent_enforced_usage_never_over_grants,
        );
    };
    // SQL only: a relay has no Stripe log (webhooks are applied by its upstream).
    ($run:ident $attrs:tt stripe) => {
        category_tests!($run $attrs stripe:
            stripe_subscription_event_applies,
            stripe_duplicate_event_changes_nothing,
            stripe_older_event_is_stale,
            stripe_unknown_customer_is_pending_until_the_tenant_appears,
            stripe_translation_errors_fail_entitling_events,
            stripe_unparseable_event_fails,
            stripe_errors_on_an_ending_subscription_still_apply,
            stripe_events_list_by_tenant_and_status,
            stripe_checkout_records_a_provisional_subscription,
            stripe_invoices_move_the_subscription_status,
            stripe_entitlement_summary_replaces_its_grants,
            concurrent_stripe_events_keep_the_newest,
            concurrent_first_stripe_events_keep_the_newest,
            concurrent_entitlement_summaries_keep_the_newest,
        );
    };
    // SQL only: migrating, and a second `SqlStore` on the same database.
    ($run:ident $attrs:tt shared_database) => {
        category_tests!($run $attrs shared_database:
            migrate_is_idempotent_and_stores_share_the_database,
        );
    };
    // SQL only: a relay has no outbox (its upstream makes notices and sends webhooks).
    ($run:ident $attrs:tt outbox) => {
        category_tests!($run $attrs outbox:
            notices_are_emitted_once_when_due,
            concurrent_emitters_make_each_notice_once,
            tenants_stored_before_notices_are_scheduled,
            deliveries_are_leased_in_order_logged_and_redelivered,
        );
    };
    ($run:ident $attrs:tt text) => {
        category_tests!($run $attrs text:
            nul_is_refused_as_invalid_input_and_changes_nothing,
        );
    };
    // SQL only: a relay has no directory (tenant lists are the central service's).
    ($run:ident $attrs:tt directory) => {
        category_tests!($run $attrs directory:
            tenants_page_in_id_order_with_their_whole_state,
        );
    };
    // SQL only: its keys (upper case, `-`, `.`) probe the database's collation; catalog keys are
    // snake_case, so a relay's upstream refuses them.
    ($run:ident $attrs:tt collation) => {
        category_tests!($run $attrs collation:
            load_lists_are_ordered_by_key,
        );
    };
}

/// A backend and the categories it runs: `mod $backend { mod $category { #[test] $case … } … }`.
macro_rules! backend {
    ($backend:ident: $run:ident $attrs:tt [$($category:ident),+ $(,)?]) => {
        mod $backend {
            $(category!($run $attrs $category);)+
        }
    };
}

backend!(sqlite: run_sqlite [] [tenants, audit, usage, usage_counter, stripe, shared_database, collation, text, directory, outbox]);
backend!(postgres: run_postgres
    [#[ignore = "needs PostgreSQL: set ENTITLEMENTS_TEST_POSTGRES_URL and run with -- --ignored"]]
    [tenants, audit, usage, usage_counter, stripe, shared_database, collation, text, directory, outbox]);
backend!(relay: run_relay [] [tenants, audit, usage, text]);

mod harness {
    use std::any::Any;
    use std::future::Future;
    use std::hash::BuildHasher;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use entitlements::clock::unix_now;
    use entitlements::config::ServeArgs;
    use entitlements::relay::{UpstreamConfig, UpstreamStore};
    use entitlements::server;
    use entitlements::store::sql::SqlStore;
    use entitlements::store::{
        AuditLog, StoreError, Stores, StripeLog, TenantDirectory, TenantStore, UsageOutcome, UsageReport, UsageStore,
    };
    use entitlements::tenant::{Trial, UnixTime};
    use sqlx::postgres::PgConnection;
    use sqlx::{AssertSqlSafe, Connection, Executor};

    use crate::T0;
    use crate::common::{POSTGRES_URL_VAR, require_postgres_url};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Backend {
        Sqlite,
        Postgres,
        Relay,
    }

    /// What a case gets: the store under test, by concern, over a private, empty database.
    pub struct Db {
        pub backend: Backend,
        pub tenants: Arc<dyn TenantStore>,
        pub usage: Arc<dyn UsageStore>,
        pub audit: Arc<dyn AuditLog>,
        /// `None` on a relay.
        pub stripe: Option<Arc<dyn StripeLog>>,
        /// `None` on a relay.
        pub directory: Option<Arc<dyn TenantDirectory>>,
        /// The database behind the store (for a relay: its central server's).
        pub url: String,
        /// When the case's changes happen: `T0` on SQL; the real clock on a relay, whose upstream
        /// refuses expiries in the past (and stamps its own clock on changes anyway).
        pub t0: UnixTime,
        /// A relay's upstream, to connect a second relay to it.
        upstream: Option<UpstreamConfig>,
    }

    /// How far back "now" may be for a time the central server stamped during a case.
    const STAMP_SLACK: i64 = 60;

    impl Db {
        fn new(backend: Backend, stores: Stores, url: String, upstream: Option<UpstreamConfig>) -> Db {
            let t0 = if backend == Backend::Relay { unix_now() } else { T0 };
            let Stores { tenants, usage, audit, stripe, directory, .. } = stores;
            Db { backend, tenants, usage, audit, stripe, directory, url, t0, upstream }
        }

        pub fn is_relay(&self) -> bool {
            self.backend == Backend::Relay
        }

        /// The Stripe log under test (the `stripe` category only runs where there is one).
        pub fn stripe(&self) -> &dyn StripeLog {
            self.stripe.as_deref().expect("a stripe case on a backend without a Stripe log")
        }

        /// Another store over the same data, as a second replica opens it: another pool on the
        /// database, or another relay (its own connection) in front of the same central server.
        pub async fn peer(&self) -> Stores {
            match &self.upstream {
                Some(cfg) => {
                    UpstreamStore::connect(cfg).unwrap_or_else(|e| panic!("connect a second relay: {e}")).stores()
                }
                None => Stores::sql(open(&self.url).await),
            }
        }

        /// Where Stripe events for this store are applied: its own log, or for a relay its
        /// central server's database (webhooks land there) — to set a case up, not to test it.
        pub async fn central_stripe_log(&self) -> Arc<dyn StripeLog> {
            match &self.stripe {
                Some(s) => Arc::clone(s),
                None => Arc::new(open(&self.url).await),
            }
        }

        /// A time the store takes from the change's [`Actor::at`](entitlements::command::Actor):
        /// exactly `expected` on SQL; through a relay the central server's clock at the change,
        /// i.e. within [`STAMP_SLACK`] seconds before now. Returns the stored value.
        #[track_caller]
        pub fn stamped(&self, actual: UnixTime, expected: UnixTime) -> UnixTime {
            if self.is_relay() {
                let now = unix_now();
                assert!(
                    (now - STAMP_SLACK..=now).contains(&actual),
                    "stamped {actual}: not the central server's clock (now {now}; the case asked for {expected})"
                );
            } else {
                assert_eq!(actual, expected, "stamped time");
            }
            actual
        }

        /// The origin a change asked for is audited with: through a relay, the upstream's admin
        /// plane records every forwarded change as `admin` (the request carries no origin).
        pub fn origin<'a>(&self, asked: &'a str) -> &'a str {
            if self.is_relay() { "admin" } else { asked }
        }

        /// The trial an `ExtendTrial` commit reports. Relay deviation: `ExtendTrialResponse`
        /// carries only the new end, which the relay reports as start and end alike.
        #[track_caller]
        pub fn assert_committed_trial(&self, committed: Option<Trial>, expected: Trial) {
            if self.is_relay() {
                assert_eq!(committed, Some(Trial { start: expected.end, end: expected.end }), "committed trial");
            } else {
                assert_eq!(committed, Some(expected), "committed trial");
            }
        }

        /// A DELTA report without an idempotency key, which a database store accepts. The API
        /// requires a key, so a relay's upstream refuses it: there the report carries `key`.
        pub fn unkeyed(&self, r: UsageReport, key: &str) -> UsageReport {
            assert_eq!(r.idempotency_key, None);
            if self.is_relay() { UsageReport { idempotency_key: Some(key.into()), ..r } } else { r }
        }

        /// Whether `r` is the refusal of a report that would overflow the counter. Relay
        /// deviation: the upstream's refusal (INVALID_ARGUMENT) comes back as `Upstream`, not as
        /// `StoreError::Overflow`.
        /// Whether `r` refused the input as the caller's fault, naming `field`. Relay deviation:
        /// the upstream's INVALID_ARGUMENT comes back as `Upstream`.
        pub fn is_invalid<T>(&self, r: &Result<T, StoreError>, field: &str) -> bool {
            match r {
                Err(StoreError::Invalid(i)) => i.field == field,
                Err(StoreError::Upstream { code: tonic::Code::InvalidArgument, message }) => {
                    self.is_relay() && message.contains(field)
                }
                _ => false,
            }
        }

        pub fn is_overflow(&self, r: &Result<UsageOutcome, StoreError>) -> bool {
            match r {
                Err(StoreError::Overflow) => true,
                Err(StoreError::Upstream { code: tonic::Code::InvalidArgument, message }) => {
                    self.is_relay() && message.contains("overflow")
                }
                _ => false,
            }
        }
    }

    pub async fn open(url: &str) -> SqlStore {
        let store = SqlStore::connect(url).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        store.migrate().await.unwrap_or_else(|e| panic!("migrate {url}: {e}"));
        store
    }

    /// Run a case on its own task so that a panic comes back here (and the database can still
    /// be cleaned up) before it is re-raised.
    async fn run_case<F, Fut>(case: F, db: Db) -> Result<(), Box<dyn Any + Send>>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match tokio::spawn(case(db)).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => Err(e.into_panic()),
            Err(e) => panic!("case task failed: {e}"),
        }
    }

    /// A case on a `SqlStore` over the (fresh) database at `url`.
    async fn run_sql<F, Fut>(case: F, backend: Backend, url: String) -> Result<(), Box<dyn Any + Send>>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let store = open(&url).await;
        let pool = store.pool().clone();
        let result = run_case(case, Db::new(backend, Stores::sql(store), url, None)).await;
        pool.close().await;
        result
    }

    pub async fn run_sqlite<F, Fut>(case: F)
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
        let result = run_sql(case, Backend::Sqlite, url).await;
        drop(dir);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    /// A name that no concurrently running test (in this or another process) will pick.
    fn random_hex() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = entitlements::clock::unix_nanos();
        let seed = (std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed));
        format!("{:016x}", std::hash::RandomState::new().hash_one(seed))
    }

    /// `url` with its database (path) replaced by `database`, keeping any query string.
    pub fn with_database(url: &str, database: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let authority_start = base.find("://").map_or(0, |i| i + 3);
        let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
        let mut out = format!("{}/{database}", &base[..path_start]);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    pub async fn run_postgres<F, Fut>(case: F)
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let server = require_postgres_url();
        let name = format!("conf_{}", random_hex());
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("connect to {server} ({POSTGRES_URL_VAR}): {e}"));
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server}: {e}"));
        let url = with_database(&server, &name);
        let result = run_sql(case, Backend::Postgres, url).await;
        // Best effort: a leftover database is harmless, its name is unique.
        if let Err(e) = admin.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await {
            eprintln!("warning: DROP DATABASE {name}: {e}");
        }
        let _ = admin.close().await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    /// The central server's admin token; the relay forwards changes with it.
    const TOKEN: &str = "conformance-admin-token";

    /// The limits of the relay catalog's default plan: through a relay, an enforced report is
    /// enforced against them (the cases that enforce use these as their reports' limits).
    pub const API_CALLS_LIMIT: i64 = 10;
    pub const SEATS_LIMIT: i64 = 8;

    /// The central server's catalog for the relay backend. Its upstream validates every
    /// forwarded command against it, so it names every plan, add-on and feature the relay-run
    /// cases use (`p<i>`, `a<i>`, `f<i>`: the generated keys of the paging and race cases).
    /// Usage reports need a metered feature; the default plan limits the two that the cases
    /// enforce (and only a report asking for enforcement is limited at all). An add-on must
    /// grant something: `extra`.
    pub fn relay_catalog() -> String {
        let mut toml = format!(
            r#"default_plan = "free"
features.api_calls = {{ kind = "counter", period = "month" }}
features.exports = {{ kind = "counter", period = "month" }}
features.storage_gb = {{ kind = "counter", period = "month" }}
features.seats = {{ kind = "gauge" }}
features.projects = {{ kind = "config" }}
features.beta_ui = {{ kind = "boolean" }}
features.audit_log = {{ kind = "boolean" }}
features.extra = {{ kind = "boolean" }}
plans.free = {{ rank = 0, features = {{ api_calls = {API_CALLS_LIMIT}, seats = {SEATS_LIMIT} }} }}
plans.pro = {{ rank = 1 }}
plans.team = {{ rank = 2 }}
plans.enterprise = {{ rank = 3 }}
addons.sso = {{ features = {{ extra = true }} }}
addons.extra_seats = {{ features = {{ extra = true }} }}
addons.nothing = {{ features = {{ extra = true }} }}
"#
        );
        for i in 0..20 {
            toml.push_str(&format!("features.f{i} = {{ kind = \"config\" }}\n"));
            toml.push_str(&format!("plans.p{i} = {{ rank = {} }}\n", 10 + i));
            toml.push_str(&format!("addons.a{i} = {{ features = {{ extra = true }} }}\n"));
        }
        toml
    }

    /// Per case: a central server (fresh SQLite file, admin token, [`relay_catalog`]) started
    /// in-process, an `UpstreamStore` connected to it with the token, the case against
    /// `up.stores()`, and the server stopped.
    pub async fn run_relay<F, Fut>(case: F)
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = dir.path().join("catalog.toml");
        std::fs::write(&catalog, relay_catalog()).expect("write the catalog");
        let url = format!("sqlite://{}", dir.path().join("central.db").display());
        let args = ServeArgs { admin_token: Some(TOKEN.into()), ..ServeArgs::local(catalog, url.clone()) };
        let central = server::start(&args).await.unwrap_or_else(|e| panic!("start the central server: {e}"));
        let upstream = UpstreamConfig {
            url: format!("http://{}", central.grpc_addr),
            token: Some(TOKEN.into()),
            admin_token: Some(TOKEN.into()),
            ca: None,
        };
        let up = UpstreamStore::connect(&upstream).unwrap_or_else(|e| panic!("connect the relay: {e}"));
        let result = run_case(case, Db::new(Backend::Relay, up.stores(), url, Some(upstream))).await;
        let stopped = central.stop().await;
        drop(dir);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        stopped.expect("stop the central server");
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "conf_ab"),
            "postgres://postgres@127.0.0.1:5432/conf_ab"
        );
        assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }

    /// The relay catalog is a valid catalog.
    #[test]
    fn relay_catalog_loads() {
        if let Err(e) = entitlements::catalog::Catalog::from_toml(&relay_catalog(), &|_| None) {
            panic!("relay catalog: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the cases.

/// When the SQL cases happen (and the start of their usage period); see [`harness::Db::t0`].
const T0: UnixTime = 1_700_000_000;

fn by(actor: &str, rationale: &str, at: UnixTime) -> Actor {
    Actor { actor: actor.into(), rationale: rationale.into(), origin: "admin".into(), at }
}

async fn mutate(s: &dyn TenantStore, tenant: &str, m: Command, at: UnixTime) -> u64 {
    s.mutate(tenant, &m, &by("alice", &format!("{} at {at}", m.action()), at))
        .await
        .unwrap_or_else(|e| panic!("mutate {tenant} {m:?}: {e}"))
        .revision
}

async fn load(s: &dyn TenantStore, tenant: &str) -> TenantState {
    s.load(tenant).await.unwrap_or_else(|e| panic!("load {tenant}: {e}"))
}

async fn audit_all(s: &dyn AuditLog, tenant: &str) -> Vec<AuditRecord> {
    s.audit(tenant, 1000, None).await.expect("audit")
}

fn put_tenant(customer: Option<&str>, trial: Option<Trial>, archived: Option<bool>) -> Command {
    Command::PutTenant { stripe_customer_id: customer.map(str::to_string), trial, archived }
}

fn json_of(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("audit JSON `{s}`: {e}"))
}

fn report(tenant: &str, feature: &str, mode: UsageMode, value: i64) -> UsageReport {
    UsageReport {
        tenant_id: tenant.into(),
        feature: feature.into(),
        mode,
        value,
        idempotency_key: None,
        period_start: T0,
        limit: None,
        at: T0 + 10,
    }
}

fn delta(tenant: &str, feature: &str, value: i64, key: &str) -> UsageReport {
    UsageReport { idempotency_key: Some(key.into()), ..report(tenant, feature, UsageMode::Delta, value) }
}

fn envelope(id: &str, event_type: &str, created: UnixTime) -> Envelope {
    Envelope {
        id: id.into(),
        event_type: event_type.into(),
        created,
        livemode: false,
        payload:
            json!({ "id": id, "type": event_type, "created": created, "livemode": false, "data": { "object": {} } })
                .to_string(),
    }
}

/// A `customer.subscription.updated` event and its translation.
struct SubEvent {
    env: Envelope,
    facts: SubscriptionFacts,
    errors: Vec<String>,
}

impl SubEvent {
    fn new(event_id: &str, sub_id: &str, customer: &str, created: UnixTime) -> SubEvent {
        SubEvent {
            env: envelope(event_id, "customer.subscription.updated", created),
            facts: SubscriptionFacts {
                subscription: Subscription {
                    id: sub_id.into(),
                    status: SubscriptionStatus::Active,
                    plan: Some("pro".into()),
                    interval: Some(Interval::Month),
                    seats: None,
                    trial_end: None,
                    current_period_start: Some(created - 10 * DAY),
                    current_period_end: Some(created + 20 * DAY),
                    cancel_at_period_end: false,
                    last_event_created: created,
                    last_event_id: event_id.into(),
                },
                customer_id: customer.into(),
                tenant_hint: None,
                addons: vec![],
            },
            errors: vec![],
        }
    }

    fn hint(mut self, tenant: &str) -> Self {
        self.facts.tenant_hint = Some(tenant.into());
        self
    }

    fn status(mut self, status: SubscriptionStatus) -> Self {
        self.facts.subscription.status = status;
        self
    }

    fn plan(mut self, plan: &str, seats: Option<i64>) -> Self {
        self.facts.subscription.plan = Some(plan.into());
        self.facts.subscription.seats = seats;
        self
    }

    fn addon(mut self, addon: &str, item: &str, quantity: i64) -> Self {
        let sub = self.facts.subscription.id.clone();
        self.facts.addons.push(AddOnGrant {
            addon: addon.into(),
            quantity,
            origin: GrantOrigin::Stripe { subscription_id: sub, item_id: item.into() },
            actor: "stripe".into(),
            rationale: format!("{} {}", self.env.event_type, self.env.id),
            granted_at: self.env.created,
            expires_at: None,
        });
        self
    }

    fn error(mut self, e: &str) -> Self {
        self.errors.push(e.into());
        self
    }

    fn translation(&self) -> Result<Translation, String> {
        Ok(Translation { fact: Fact::Subscription(self.facts.clone()), errors: self.errors.clone() })
    }
}

async fn apply(s: &dyn StripeLog, e: &SubEvent, at: UnixTime) -> entitlements::store::StripeOutcome {
    s.apply_stripe_event(&e.env, &e.translation(), None, at)
        .await
        .unwrap_or_else(|err| panic!("apply_stripe_event {}: {err}", e.env.id))
}

// ---------------------------------------------------------------------------------------------
// The cases, by category. Each runs against a fresh, migrated, empty database.

mod cases {
    /// TenantStore: load, mutate (with the audit record it writes), ping; revisions; concurrent mutations.
    pub mod tenants {
        use crate::harness::Db;
        use crate::*;

        pub async fn ping(db: Db) {
            db.tenants.ping().await.expect("ping");
        }

        pub async fn unknown_tenant_loads_as_unknown(db: Db) {
            let s = &*db.tenants;
            let t = load(s, "nobody").await;
            assert_eq!(t, TenantState::unknown("nobody"));
            assert!(!t.known);
            assert_eq!(t.revision, 0);
            assert!(t.subscriptions.is_empty() && t.plan_assignments.is_empty());
            assert!(t.addon_grants.is_empty() && t.overrides.is_empty());
            assert_eq!(t.last_change, None);
            assert!(db.audit.audit("nobody", 10, None).await.expect("audit").is_empty());
            assert_eq!(db.usage.usage("nobody", "api_calls", T0).await.expect("usage"), 0);
            // Reading does not create the tenant.
            assert!(!load(s, "nobody").await.known);
        }

        pub async fn put_tenant_creates_and_updates_partially(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            let trial = Trial { start: t0, end: t0 + 14 * DAY };
            let c = s
                .mutate("acme", &put_tenant(Some("cus_acme"), Some(trial), None), &by("alice", "onboarding", t0))
                .await
                .expect("put");
            assert_eq!(c.revision, 1, "a new tenant starts at revision 1");
            let t = load(s, "acme").await;
            assert!(t.known);
            assert_eq!(t.tenant_id, "acme");
            assert_eq!(t.revision, 1);
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_acme"));
            assert_eq!(t.trial, Some(trial));
            assert!(!t.archived);
            let at = db.stamped(t.last_change.as_ref().map_or(0, |c| c.at), t0);
            assert_eq!(
                t.last_change,
                Some(entitlements::tenant::Change {
                    actor: "alice".into(),
                    at,
                    rationale: "onboarding".into(),
                    origin: "admin".into(),
                })
            );

            // Only `archived` given: customer and trial stay.
            let c = s
                .mutate("acme", &put_tenant(None, None, Some(true)), &by("bob", "churned", t0 + 5))
                .await
                .expect("archive");
            assert_eq!(c.revision, 2);
            let t = load(s, "acme").await;
            assert!(t.archived);
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_acme"));
            assert_eq!(t.trial, Some(trial));
            let last = t.last_change.expect("last change");
            assert_eq!(last.actor, "bob");
            db.stamped(last.at, t0 + 5);
            assert_eq!(last.rationale, "churned");

            // A new trial only; then un-archive only; then a new customer id.
            let trial2 = Trial { start: t0 + 100, end: t0 + 100 + 30 * DAY };
            assert_eq!(mutate(s, "acme", put_tenant(None, Some(trial2), None), t0 + 6).await, 3);
            let t = load(s, "acme").await;
            assert_eq!(t.trial, Some(trial2));
            assert!(t.archived);
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_acme"));

            assert_eq!(mutate(s, "acme", put_tenant(None, None, Some(false)), t0 + 7).await, 4);
            assert!(!load(s, "acme").await.archived);

            assert_eq!(mutate(s, "acme", put_tenant(Some("cus_new"), None, None), t0 + 8).await, 5);
            let t = load(s, "acme").await;
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_new"));
            assert_eq!(t.trial, Some(trial2));

            // An empty customer id clears it.
            assert_eq!(mutate(s, "acme", put_tenant(Some(""), None, None), t0 + 9).await, 6);
            let t = load(s, "acme").await;
            if db.is_relay() {
                // Relay deviation: `PutTenantRequest` carries the customer id as a plain string in
                // which "" means "leave it as it is", so a forwarded clear keeps the id. (If this
                // fails, the relay clears it now: drop this branch.)
                assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_new"));
            } else {
                assert_eq!(t.stripe_customer_id, None);
            }
            assert_eq!(t.trial, Some(trial2));
            assert!(!t.archived);

            // A put with nothing set still counts as a change.
            assert_eq!(mutate(s, "acme", put_tenant(None, None, None), t0 + 10).await, 7);
            let t = load(s, "acme").await;
            assert_eq!(t.revision, 7);
            assert_eq!(t.trial, Some(trial2));

            // Other tenants are untouched.
            assert!(!load(s, "other").await.known);
        }

        pub async fn mutation_on_unknown_tenant_creates_it(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            let rev =
                mutate(s, "fresh", Command::GrantAddOn { addon: "sso".into(), quantity: 1, expires_at: None }, t0)
                    .await;
            assert_eq!(rev, 1);
            let t = load(s, "fresh").await;
            assert!(t.known);
            assert_eq!(t.revision, 1);
            assert_eq!(t.stripe_customer_id, None);
            assert_eq!(t.trial, None);
            assert!(!t.archived);
            assert_eq!(t.addon_grants.len(), 1);
            assert_eq!(t.addon_grants[0].addon, "sso");

            // Every other kind of mutation creates its tenant as well.
            let firsts = [
                Command::AssignPlan { plan: "pro".into(), expires_at: None },
                Command::UnassignPlan { plan: None },
                Command::ExtendTrial { extension: TrialExtension::Days(7) },
                Command::RevokeAddOn { addon: "sso".into() },
                Command::SetOverride { feature: "api_calls".into(), value: Value::Number(5), expires_at: None },
                Command::ClearOverride { feature: "api_calls".into() },
                put_tenant(None, None, None),
            ];
            for (i, m) in firsts.into_iter().enumerate() {
                let tenant = format!("fresh-{i}");
                assert_eq!(mutate(s, &tenant, m.clone(), t0).await, 1, "{m:?}");
                let t = load(s, &tenant).await;
                assert!(t.known, "{m:?}");
                assert_eq!(t.revision, 1, "{m:?}");
            }
        }

        pub async fn assign_and_unassign_plans(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            let at = t0 + 50;
            s.mutate(
                "t",
                &Command::AssignPlan { plan: "pro".into(), expires_at: Some(t0 + 90 * DAY) },
                &by("sales", "contract #42", at),
            )
            .await
            .expect("assign pro");
            mutate(s, "t", Command::AssignPlan { plan: "enterprise".into(), expires_at: None }, at + 1).await;
            let t = load(s, "t").await;
            let plans: Vec<_> = t.plan_assignments.iter().map(|a| a.plan.as_str()).collect();
            assert_eq!(plans, ["enterprise", "pro"]);
            let pro = &t.plan_assignments[1];
            assert_eq!(pro.actor, "sales");
            assert_eq!(pro.rationale, "contract #42");
            db.stamped(pro.assigned_at, at);
            assert_eq!(pro.expires_at, Some(t0 + 90 * DAY));
            assert_eq!(t.plan_assignments[0].expires_at, None);

            // Re-assigning replaces the assignment (no duplicate row).
            mutate(s, "t", Command::AssignPlan { plan: "pro".into(), expires_at: None }, at + 2).await;
            let t = load(s, "t").await;
            assert_eq!(t.plan_assignments.len(), 2);
            let pro = t.plan_assignments.iter().find(|a| a.plan == "pro").expect("pro");
            assert_eq!(pro.expires_at, None);
            db.stamped(pro.assigned_at, at + 2);
            assert_eq!(pro.actor, "alice");

            // Unassigning one plan keeps the others.
            mutate(s, "t", Command::UnassignPlan { plan: Some("pro".into()) }, at + 3).await;
            let plans: Vec<_> = load(s, "t").await.plan_assignments.into_iter().map(|a| a.plan).collect();
            assert_eq!(plans, ["enterprise"]);

            // Unassigning a plan that is not assigned changes nothing but is still a revision.
            let rev = mutate(s, "t", Command::UnassignPlan { plan: Some("team".into()) }, at + 4).await;
            assert_eq!(rev, 5);
            assert_eq!(load(s, "t").await.plan_assignments.len(), 1);

            // No plan: every manual assignment goes.
            for plan in ["pro", "team"] {
                mutate(s, "t", Command::AssignPlan { plan: plan.into(), expires_at: None }, at + 5).await;
            }
            // Another tenant's assignment must survive.
            mutate(s, "u", Command::AssignPlan { plan: "pro".into(), expires_at: None }, at + 5).await;
            assert_eq!(load(s, "t").await.plan_assignments.len(), 3);
            mutate(s, "t", Command::UnassignPlan { plan: None }, at + 6).await;
            assert!(load(s, "t").await.plan_assignments.is_empty());
            assert_eq!(load(s, "u").await.plan_assignments.len(), 1);

            let unassign_all = &audit_all(&*db.audit, "t").await[0];
            assert_eq!(unassign_all.action, "unassign_plan");
            let before = json_of(&unassign_all.before);
            assert_eq!(before.as_array().map(Vec::len), Some(3), "before lists the removed assignments: {before}");
            assert_eq!(json_of(&unassign_all.after), json!([]));
        }

        pub async fn extend_trial_by_days_and_until(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            // No trial yet: Days starts one now.
            let now = t0 + 1000;
            let c = s
                .mutate("t", &Command::ExtendTrial { extension: TrialExtension::Days(3) }, &by("alice", "pilot", now))
                .await
                .expect("extend");
            let start = db.stamped(load(s, "t").await.trial.map_or(0, |t| t.start), now);
            let started = Trial { start, end: start + 3 * DAY };
            assert_eq!(c.revision, 1);
            db.assert_committed_trial(c.trial, started);
            assert_eq!(load(s, "t").await.trial, Some(started));

            // Days add to the current end.
            let c = s
                .mutate(
                    "t",
                    &Command::ExtendTrial { extension: TrialExtension::Days(7) },
                    &by("alice", "more time", now + 50),
                )
                .await
                .expect("extend");
            let extended = Trial { start, end: start + 10 * DAY };
            assert_eq!(c.revision, 2);
            db.assert_committed_trial(c.trial, extended);
            assert_eq!(load(s, "t").await.trial, Some(extended));

            // Until sets the end.
            let until = t0 + 60 * DAY;
            let c = s
                .mutate(
                    "t",
                    &Command::ExtendTrial { extension: TrialExtension::Until(until) },
                    &by("alice", "quarter end", now + 60),
                )
                .await
                .expect("extend");
            let moved = Trial { start, end: until };
            db.assert_committed_trial(c.trial, moved);
            let t = load(s, "t").await;
            assert_eq!(t.trial, Some(moved));
            assert_eq!(t.revision, 3);

            let a = &audit_all(&*db.audit, "t").await[0];
            assert_eq!(a.action, "extend_trial");
            assert_eq!(json_of(&a.before), json!({ "start": start, "end": start + 10 * DAY }));
            assert_eq!(json_of(&a.after), json!({ "start": start, "end": until }));

            // Extending keeps the rest of the tenant record.
            mutate(s, "c", put_tenant(Some("cus_c"), None, Some(false)), t0).await;
            let c = s
                .mutate(
                    "c",
                    &Command::ExtendTrial { extension: TrialExtension::Until(t0 + 5 * DAY) },
                    &by("alice", "trial", t0 + 1),
                )
                .await
                .expect("extend");
            let start = db.stamped(load(s, "c").await.trial.map_or(0, |t| t.start), t0 + 1);
            let trial = Trial { start, end: t0 + 5 * DAY };
            db.assert_committed_trial(c.trial, trial);
            let t = load(s, "c").await;
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_c"));
            assert_eq!(t.trial, Some(trial), "the committed trial");
        }

        pub async fn grant_and_revoke_addons(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            s.mutate(
                "t",
                &Command::GrantAddOn { addon: "extra_seats".into(), quantity: 5, expires_at: Some(t0 + 30 * DAY) },
                &by("cs", "goodwill", t0),
            )
            .await
            .expect("grant");
            let t = load(s, "t").await;
            let granted_at = db.stamped(t.addon_grants.first().map_or(0, |g| g.granted_at), t0);
            assert_eq!(
                t.addon_grants,
                vec![AddOnGrant {
                    addon: "extra_seats".into(),
                    quantity: 5,
                    origin: GrantOrigin::Manual,
                    actor: "cs".into(),
                    rationale: "goodwill".into(),
                    granted_at,
                    expires_at: Some(t0 + 30 * DAY),
                }]
            );

            // Granting again replaces the manual grant.
            mutate(s, "t", Command::GrantAddOn { addon: "extra_seats".into(), quantity: 7, expires_at: None }, t0 + 1)
                .await;
            mutate(s, "t", Command::GrantAddOn { addon: "sso".into(), quantity: 1, expires_at: None }, t0 + 2).await;
            let t = load(s, "t").await;
            assert_eq!(t.addon_grants.len(), 2);
            let seats = t.addon_grants.iter().find(|g| g.addon == "extra_seats").expect("seats");
            assert_eq!((seats.quantity, seats.expires_at), (7, None));
            db.stamped(seats.granted_at, t0 + 1);

            // A Stripe subscription grants the same add-on through its item (applied where webhooks
            // land: behind a relay, by its central server).
            let e = SubEvent::new("evt_g1", "sub_g", "cus_g", t0 + 10).hint("t").addon("extra_seats", "si_seats", 3);
            let stripe = db.central_stripe_log().await;
            assert_eq!(apply(&*stripe, &e, t0 + 10).await.status, StripeStatus::Applied);
            let t = load(s, "t").await;
            assert_eq!(t.addon_grants.iter().filter(|g| g.addon == "extra_seats").count(), 2);

            // Revoking removes only the manual grant of that add-on.
            let rev = mutate(s, "t", Command::RevokeAddOn { addon: "extra_seats".into() }, t0 + 20).await;
            let t = load(s, "t").await;
            assert_eq!(t.revision, rev);
            let left: Vec<_> = t.addon_grants.iter().map(|g| (g.addon.as_str(), &g.origin)).collect();
            assert_eq!(
                left,
                [
                    (
                        "extra_seats",
                        &GrantOrigin::Stripe { subscription_id: "sub_g".into(), item_id: "si_seats".into() }
                    ),
                    ("sso", &GrantOrigin::Manual),
                ]
            );
            assert_eq!(t.addon_grants[0].quantity, 3);

            let a = &audit_all(&*db.audit, "t").await[0];
            assert_eq!(a.action, "revoke_addon");
            assert_eq!(json_of(&a.before)["quantity"], json!(7));
            assert_eq!(json_of(&a.after), serde_json::Value::Null);

            // Revoking something not granted is harmless.
            mutate(s, "t", Command::RevokeAddOn { addon: "nothing".into() }, t0 + 21).await;
            assert_eq!(load(s, "t").await.addon_grants.len(), 2);
        }

        pub async fn set_and_clear_overrides(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            let values = [
                ("beta_ui", Value::Bool(true), Some(t0 + DAY)),
                ("projects", Value::Number(250), None),
                ("api_calls", Value::Unlimited, Some(t0 + 7 * DAY)),
                ("audit_log", Value::Bool(false), None),
                ("seats", Value::Number(0), None),
            ];
            for (i, (feature, value, expires_at)) in values.iter().enumerate() {
                s.mutate(
                    "t",
                    &Command::SetOverride { feature: (*feature).into(), value: *value, expires_at: *expires_at },
                    &by("support", &format!("ticket {i}"), t0 + i as i64),
                )
                .await
                .expect("set override");
            }
            let t = load(s, "t").await;
            assert_eq!(t.overrides.len(), values.len());
            for (i, (feature, value, expires_at)) in values.iter().enumerate() {
                let o = t.overrides.iter().find(|o| o.feature == *feature).expect("override");
                assert_eq!(o.value, *value, "{feature}");
                assert_eq!(o.expires_at, *expires_at, "{feature}");
                assert_eq!(o.actor, "support");
                assert_eq!(o.rationale, format!("ticket {i}"));
                db.stamped(o.set_at, t0 + i as i64);
            }
            let order: Vec<_> = t.overrides.iter().map(|o| o.feature.as_str()).collect();
            assert_eq!(order, ["api_calls", "audit_log", "beta_ui", "projects", "seats"]);

            // Setting again replaces (number → unlimited, unlimited → number, bool flips).
            for (feature, value) in [
                ("projects", Value::Unlimited),
                ("api_calls", Value::Number(1_000_000)),
                ("beta_ui", Value::Bool(false)),
            ] {
                mutate(s, "t", Command::SetOverride { feature: feature.into(), value, expires_at: None }, t0 + 100)
                    .await;
            }
            let t = load(s, "t").await;
            assert_eq!(t.overrides.len(), values.len());
            let value = |f: &str| t.overrides.iter().find(|o| o.feature == f).map(|o| (o.value, o.expires_at));
            assert_eq!(value("projects"), Some((Value::Unlimited, None)));
            assert_eq!(value("api_calls"), Some((Value::Number(1_000_000), None)));
            assert_eq!(value("beta_ui"), Some((Value::Bool(false), None)));

            let a = &audit_all(&*db.audit, "t").await[0];
            assert_eq!(a.action, "set_override");
            assert_eq!(json_of(&a.before)["value"], json!({ "bool": true }));
            assert_eq!(json_of(&a.after)["value"], json!({ "bool": false }));

            // Clearing removes exactly that override.
            mutate(s, "t", Command::ClearOverride { feature: "projects".into() }, t0 + 200).await;
            let t = load(s, "t").await;
            assert_eq!(t.overrides.len(), values.len() - 1);
            assert!(t.overrides.iter().all(|o| o.feature != "projects"));
            let a = &audit_all(&*db.audit, "t").await[0];
            assert_eq!(a.action, "clear_override");
            assert_eq!(json_of(&a.before)["value"], json!("unlimited"));
            assert_eq!(json_of(&a.after), serde_json::Value::Null);

            // Clearing an absent override is harmless.
            mutate(s, "t", Command::ClearOverride { feature: "projects".into() }, t0 + 201).await;
            assert_eq!(load(s, "t").await.overrides.len(), values.len() - 1);
        }

        pub async fn revision_bumps_by_exactly_one_per_mutation(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            let all = [
                put_tenant(Some("cus_r"), None, None),
                Command::AssignPlan { plan: "pro".into(), expires_at: None },
                Command::ExtendTrial { extension: TrialExtension::Days(1) },
                Command::ExtendTrial { extension: TrialExtension::Until(t0 + 9 * DAY) },
                Command::GrantAddOn { addon: "sso".into(), quantity: 1, expires_at: None },
                Command::SetOverride { feature: "projects".into(), value: Value::Number(3), expires_at: None },
                Command::ClearOverride { feature: "projects".into() },
                Command::RevokeAddOn { addon: "sso".into() },
                Command::UnassignPlan { plan: Some("pro".into()) },
                Command::UnassignPlan { plan: None },
                put_tenant(None, None, Some(true)),
            ];
            for (i, m) in all.iter().enumerate() {
                let expected = i as u64 + 1;
                assert_eq!(mutate(s, "r", m.clone(), t0 + i as i64).await, expected, "{m:?}");
                assert_eq!(load(s, "r").await.revision, expected, "{m:?}");
                // Unrelated tenants keep their revision.
                if i == 0 {
                    mutate(s, "bystander", put_tenant(None, None, None), t0).await;
                }
                assert_eq!(load(s, "bystander").await.revision, 1);
            }
            // Usage does not bump the revision (usage is not entitlement state).
            db.usage.record_usage(&delta("r", "api_calls", 1, "k")).await.expect("usage");
            assert_eq!(load(s, "r").await.revision, all.len() as u64);
        }

        pub async fn concurrent_mutations_get_distinct_revisions(db: Db) {
            let t0 = db.t0;
            // Two stores over the same data, like two replicas (or two relays).
            let stores = [db.tenants.clone(), db.peer().await.tenants];
            let mut tasks = Vec::new();
            for i in 0..20_i64 {
                let s = stores[(i % 2) as usize].clone();
                tasks.push(tokio::spawn(async move {
                    let m = match i % 4 {
                        0 => {
                            Command::SetOverride { feature: format!("f{i}"), value: Value::Number(i), expires_at: None }
                        }
                        1 => Command::GrantAddOn { addon: format!("a{i}"), quantity: i, expires_at: None },
                        2 => Command::AssignPlan { plan: format!("p{i}"), expires_at: None },
                        _ => put_tenant(None, None, None),
                    };
                    s.mutate("busy", &m, &by(&format!("actor-{i}"), "race", t0 + i)).await.map(|c| c.revision)
                }));
            }
            let mut revisions = Vec::new();
            for t in tasks {
                revisions.push(t.await.expect("task").expect("mutate"));
            }
            revisions.sort_unstable();
            assert_eq!(revisions, (1..=20).collect::<Vec<u64>>(), "distinct, no gaps");
            let t = load(&*db.tenants, "busy").await;
            assert_eq!(t.revision, 20);
            assert_eq!(t.overrides.len(), 5);
            assert_eq!(t.addon_grants.len(), 5);
            assert_eq!(t.plan_assignments.len(), 5);
            let events = audit_all(&*db.audit, "busy").await;
            assert_eq!(events.len(), 20);
            let audited: Vec<u64> = events.iter().map(|e| e.revision).collect();
            assert_eq!(audited, (1..=20).rev().collect::<Vec<u64>>(), "audit order follows revision order");
            let actors: BTreeSet<_> = events.iter().map(|e| e.actor.clone()).collect();
            assert_eq!(actors.len(), 20);
        }
    }

    /// AuditLog: what is recorded of each change, and paging.
    pub mod audit {
        use crate::harness::Db;
        use crate::*;

        pub async fn audit_records_every_mutation(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            let trial = Trial { start: t0, end: t0 + DAY };
            let steps: Vec<(Command, Actor)> = vec![
                (put_tenant(Some("cus_a"), Some(trial), None), by("alice", "signup", t0)),
                (
                    Command::AssignPlan { plan: "enterprise".into(), expires_at: Some(t0 + 365 * DAY) },
                    by("bob", "contract", t0 + 1),
                ),
                (
                    Command::GrantAddOn { addon: "sso".into(), quantity: 2, expires_at: None },
                    Actor { actor: "carol".into(), rationale: "promo".into(), origin: "evt_123".into(), at: t0 + 2 },
                ),
                (
                    Command::SetOverride { feature: "projects".into(), value: Value::Number(42), expires_at: None },
                    by("dave", "big customer", t0 + 3),
                ),
            ];
            for (m, a) in &steps {
                s.mutate("a", m, a).await.expect("mutate");
            }
            mutate(s, "b", put_tenant(None, None, None), t0 + 4).await;

            let events = audit_all(&*db.audit, "a").await;
            assert_eq!(events.len(), steps.len(), "one audit event per mutation");
            for (e, (rev, (m, a))) in events.iter().rev().zip(steps.iter().enumerate()) {
                assert_eq!(e.tenant_id, "a");
                assert_eq!(e.action, m.action());
                assert_eq!(e.actor, a.actor);
                assert_eq!(e.rationale, a.rationale);
                assert_eq!(e.origin, db.origin(&a.origin));
                db.stamped(e.at, a.at);
                assert_eq!(e.revision, rev as u64 + 1);
            }
            // Newest first, ids increasing with time.
            assert!(events.windows(2).all(|w| w[0].id > w[1].id));

            let [set_override, grant, assign, put] = &events[..] else { panic!("four events") };
            assert_eq!(json_of(&put.before), serde_json::Value::Null, "a new tenant has no before");
            assert_eq!(
                json_of(&put.after),
                json!({ "stripe_customer_id": "cus_a", "trial": { "start": t0, "end": t0 + DAY }, "archived": false })
            );
            assert_eq!(json_of(&assign.before), serde_json::Value::Null);
            let after = json_of(&assign.after);
            assert_eq!(after["plan"], json!("enterprise"));
            assert_eq!(after["expires_at"], json!(t0 + 365 * DAY));
            assert_eq!(after["actor"], json!("bob"));
            let after = json_of(&grant.after);
            assert_eq!(after["addon"], json!("sso"));
            assert_eq!(after["quantity"], json!(2));
            assert_eq!(after["origin"], json!({ "type": "manual" }));
            let after = json_of(&set_override.after);
            assert_eq!(after["feature"], json!("projects"));
            assert_eq!(after["value"], json!({ "number": 42 }));
            assert_eq!(after["rationale"], json!("big customer"));

            // A second put shows the previous record as `before`.
            mutate(s, "a", put_tenant(None, None, Some(true)), t0 + 5).await;
            let e = &audit_all(&*db.audit, "a").await[0];
            assert_eq!(e.revision, 5);
            assert_eq!(
                json_of(&e.before),
                json!({ "stripe_customer_id": "cus_a", "trial": { "start": t0, "end": t0 + DAY }, "archived": false })
            );
            assert_eq!(json_of(&e.after)["archived"], json!(true));

            // The other tenant's events are its own.
            let b = audit_all(&*db.audit, "b").await;
            assert_eq!(b.len(), 1);
            assert_eq!(b[0].tenant_id, "b");
            assert_eq!(b[0].revision, 1);
        }

        pub async fn audit_pages_newest_first(db: Db) {
            let t0 = db.t0;
            let s = &*db.tenants;
            for i in 0..7 {
                mutate(
                    s,
                    "p",
                    Command::SetOverride { feature: format!("f{i}"), value: Value::Number(i), expires_at: None },
                    t0 + i,
                )
                .await;
                // Interleave another tenant's events so ids are not contiguous.
                mutate(s, "q", put_tenant(None, None, None), t0 + i).await;
            }
            let all = audit_all(&*db.audit, "p").await;
            assert_eq!(all.len(), 7);
            let revisions: Vec<_> = all.iter().map(|e| e.revision).collect();
            assert_eq!(revisions, [7, 6, 5, 4, 3, 2, 1]);

            let mut pages = Vec::new();
            let mut before = None;
            loop {
                let page = db.audit.audit("p", 3, before).await.expect("audit page");
                assert!(page.len() <= 3);
                let Some(last) = page.last() else { break };
                before = Some(last.id);
                pages.push(page.iter().map(|e| e.revision).collect::<Vec<_>>());
            }
            assert_eq!(pages, [vec![7, 6, 5], vec![4, 3, 2], vec![1]]);

            // Continuing from the middle, and past the oldest.
            let from = all[2].id;
            let rest: Vec<_> =
                db.audit.audit("p", 100, Some(from)).await.expect("audit").iter().map(|e| e.revision).collect();
            assert_eq!(rest, [4, 3, 2, 1]);
            assert!(db.audit.audit("p", 100, Some(all[6].id)).await.expect("audit").is_empty());
            assert_eq!(db.audit.audit("p", 1, None).await.expect("audit"), vec![all[0].clone()]);
            let none = db.audit.audit("p", 0, None).await.expect("audit");
            if db.is_relay() {
                // Relay deviation: a limit of 0 travels as page_size 0, which the API reads as
                // "unset" (a default page). (If this fails, the relay asks for nothing now: drop
                // this branch.)
                assert_eq!(none, all);
            } else {
                assert!(none.is_empty());
            }
        }
    }

    /// UsageStore, as any backend implements it (a relay: through its upstream's API, which
    /// requires keys on deltas and enforces its own limits).
    pub mod usage {
        use crate::harness::Db;
        use crate::*;

        pub async fn usage_delta_accumulates(db: Db) {
            let s = &*db.usage;
            let o = s.record_usage(&delta("t", "api_calls", 3, "k1")).await.expect("usage");
            assert!(o.applied && !o.duplicate);
            assert_eq!(o.used, 3);
            let o = s.record_usage(&delta("t", "api_calls", 4, "k2")).await.expect("usage");
            assert!(o.applied && !o.duplicate);
            assert_eq!(o.used, 7);
            let o = s.record_usage(&delta("t", "api_calls", 0, "k3")).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 7));
            // A delta without a key (the store accepts it; the API requires one) still accumulates.
            let keyless = report("t", "api_calls", UsageMode::Delta, 5);
            if db.is_relay() {
                // A relay's upstream is the API: it refuses the report, and takes it with a key.
                let err = s.record_usage(&keyless).await;
                assert!(
                    matches!(&err, Err(StoreError::Upstream { code: tonic::Code::InvalidArgument, .. })),
                    "{err:?}"
                );
            }
            let o = s.record_usage(&db.unkeyed(keyless, "k4")).await.expect("usage");
            assert_eq!((o.applied, o.duplicate, o.used), (true, false, 12));
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 12);
            // Counters are per tenant and feature.
            assert_eq!(s.usage("t", "storage_gb", T0).await.expect("usage"), 0);
            assert_eq!(s.usage("u", "api_calls", T0).await.expect("usage"), 0);
            let o = s.record_usage(&delta("u", "api_calls", 1, "k1")).await.expect("usage");
            assert_eq!((o.applied, o.duplicate, o.used), (true, false, 1));
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 12);
        }

        pub async fn usage_set_replaces_the_gauge(db: Db) {
            let s = &*db.usage;
            let set = |v: i64| report("t", "seats", UsageMode::Set, v);
            let o = s.record_usage(&set(10)).await.expect("set");
            assert_eq!((o.applied, o.duplicate, o.used), (true, false, 10));
            let o = s.record_usage(&set(4)).await.expect("set");
            assert_eq!((o.applied, o.used), (true, 4), "a gauge can go down");
            assert_eq!(s.usage("t", "seats", T0).await.expect("usage"), 4);
            let o = s.record_usage(&set(0)).await.expect("set");
            assert_eq!((o.applied, o.used), (true, 0));
            // With a key, SET is idempotent too.
            let keyed = UsageReport { idempotency_key: Some("g1".into()), ..set(6) };
            let o = s.record_usage(&keyed).await.expect("set");
            assert_eq!((o.applied, o.duplicate, o.used), (true, false, 6));
            let o = s.record_usage(&UsageReport { value: 9, ..keyed.clone() }).await.expect("set");
            assert_eq!((o.applied, o.duplicate, o.used), (true, true, 6));
            assert_eq!(s.usage("t", "seats", T0).await.expect("usage"), 6);
            // Enforced: a gauge above the limit is refused and leaves the counter. (The limit is 8,
            // the one a relay's upstream enforces: its default plan's.)
            let o = s.record_usage(&UsageReport { limit: Some(SEATS_LIMIT), ..set(9) }).await.expect("set");
            assert_eq!((o.applied, o.used), (false, 6));
            let o = s.record_usage(&UsageReport { limit: Some(SEATS_LIMIT), ..set(8) }).await.expect("set");
            assert_eq!((o.applied, o.used), (true, 8));
            // Then a delta adds to the gauge's value.
            let o = s.record_usage(&delta("t", "seats", 2, "d")).await.expect("delta");
            assert_eq!(o.used, 10);
        }

        pub async fn usage_idempotency_returns_the_original_result(db: Db) {
            let s = &*db.usage;
            let first = s.record_usage(&delta("t", "api_calls", 5, "once")).await.expect("usage");
            assert_eq!((first.applied, first.duplicate, first.used), (true, false, 5));
            s.record_usage(&delta("t", "api_calls", 2, "other")).await.expect("usage");

            // Same key, whatever the value: the original result, nothing added.
            for value in [5, 100] {
                let again = s.record_usage(&delta("t", "api_calls", value, "once")).await.expect("usage");
                assert!(again.duplicate);
                assert!(again.applied, "the original was applied");
                assert_eq!(again.used, 5, "the original `used`, not the current counter");
            }
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 7);

            // A refused report replays as refused, with the original `used`. (The limit is 10, the
            // one a relay's upstream enforces: its default plan's.)
            let refused = s
                .record_usage(&UsageReport { limit: Some(API_CALLS_LIMIT), ..delta("t", "api_calls", 4, "too-much") })
                .await
                .expect("usage");
            assert_eq!((refused.applied, refused.duplicate, refused.used), (false, false, 7));
            s.record_usage(&delta("t", "api_calls", 1, "more")).await.expect("usage");
            let replay = s
                .record_usage(&UsageReport { limit: Some(100), ..delta("t", "api_calls", 4, "too-much") })
                .await
                .expect("usage");
            assert_eq!((replay.applied, replay.duplicate, replay.used), (false, true, 7));
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 8);
        }

        pub async fn usage_idempotency_keys_are_scoped_to_tenant_and_feature(db: Db) {
            let s = &*db.usage;
            let a = s.record_usage(&delta("t", "api_calls", 1, "k")).await.expect("usage");
            let b = s.record_usage(&delta("t", "exports", 2, "k")).await.expect("usage");
            let c = s.record_usage(&delta("u", "api_calls", 3, "k")).await.expect("usage");
            for o in [a, b, c] {
                assert!(o.applied && !o.duplicate, "{o:?}");
            }
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 1);
            assert_eq!(s.usage("t", "exports", T0).await.expect("usage"), 2);
            assert_eq!(s.usage("u", "api_calls", T0).await.expect("usage"), 3);
            assert!(s.record_usage(&delta("t", "exports", 2, "k")).await.expect("usage").duplicate);
        }

        pub async fn usage_overflow_is_an_error(db: Db) {
            let s = &*db.usage;
            let o = s.record_usage(&delta("t", "api_calls", i64::MAX - 5, "big")).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, i64::MAX - 5));
            let err = s.record_usage(&delta("t", "api_calls", 10, "over")).await;
            assert!(db.is_overflow(&err), "{err:?}");
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), i64::MAX - 5, "counter unchanged");
            // The failed key was not consumed: a retry still gets a real answer.
            let err = s.record_usage(&delta("t", "api_calls", 10, "over")).await;
            assert!(db.is_overflow(&err), "{err:?}");
            let err = s.record_usage(&db.unkeyed(report("t", "api_calls", UsageMode::Delta, i64::MAX), "max")).await;
            assert!(db.is_overflow(&err), "{err:?}");
            // Exactly up to i64::MAX is fine.
            let o = s.record_usage(&delta("t", "api_calls", 5, "fits")).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, i64::MAX));
            let err = s.record_usage(&delta("t", "api_calls", 1, "one-more")).await;
            assert!(db.is_overflow(&err), "{err:?}");
            // The store keeps working afterwards.
            db.tenants.ping().await.expect("ping");
            let o = s.record_usage(&delta("t", "exports", 1, "k")).await.expect("usage");
            assert_eq!(o.used, 1);
        }

        pub async fn concurrent_duplicate_keys_apply_once(db: Db) {
            // Two stores over the same data, like two replicas (or two relays).
            let stores = [db.usage.clone(), db.peer().await.usage];
            let mut tasks = Vec::new();
            for i in 0..20 {
                let s = stores[i % 2].clone();
                tasks
                    .push(tokio::spawn(async move { s.record_usage(&delta("dup", "api_calls", 3, "same-key")).await }));
            }
            let mut originals = 0;
            for t in tasks {
                let o = t.await.expect("task").expect("record_usage");
                assert!(o.applied, "{o:?}");
                assert_eq!(o.used, 3, "{o:?}");
                if !o.duplicate {
                    originals += 1;
                }
            }
            assert_eq!(originals, 1, "exactly one report is the original");
            assert_eq!(db.usage.usage("dup", "api_calls", T0).await.expect("usage"), 3);
        }
    }

    /// UsageStore: the counter statement itself — enforcement against the report's limit, rollover
    /// to the report's period. SQL only: a relay's upstream computes both from the tenant's plan.
    pub mod usage_counter {
        use crate::harness::Db;
        use crate::*;

        pub async fn usage_enforce_refuses_over_limit(db: Db) {
            let s = &*db.usage;
            let enforced = |v: i64, key: &str| UsageReport { limit: Some(10), ..delta("t", "api_calls", v, key) };
            // Refused before any counter exists: nothing is created.
            let o = s.record_usage(&enforced(11, "a")).await.expect("usage");
            assert_eq!((o.applied, o.duplicate, o.used), (false, false, 0));
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 0);

            let o = s.record_usage(&enforced(6, "b")).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 6));
            let o = s.record_usage(&enforced(5, "c")).await.expect("usage");
            assert_eq!((o.applied, o.used), (false, 6), "6 + 5 > 10: refused, counter unchanged");
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 6);
            let o = s.record_usage(&enforced(4, "d")).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 10), "exactly at the limit is allowed");
            let o = s.record_usage(&enforced(1, "e")).await.expect("usage");
            assert_eq!((o.applied, o.used), (false, 10));
            let o = s.record_usage(&enforced(0, "f")).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 10), "a zero delta fits");
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 10);

            // Not enforced: the limit does not apply.
            let o = s.record_usage(&delta("t", "api_calls", 5, "g")).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 15));
            // Now over the limit: every enforced positive delta is refused.
            let o = s.record_usage(&enforced(1, "h")).await.expect("usage");
            assert_eq!((o.applied, o.used), (false, 15));
            assert_eq!(s.usage("t", "api_calls", T0).await.expect("usage"), 15);
            // A zero limit refuses everything positive.
            let o = s
                .record_usage(&UsageReport { limit: Some(0), ..delta("z", "api_calls", 1, "z") })
                .await
                .expect("usage");
            assert_eq!((o.applied, o.used), (false, 0));
        }

        pub async fn usage_period_rollover(db: Db) {
            let s = &*db.usage;
            let p1 = T0;
            let p2 = T0 + 30 * DAY;
            let p3 = T0 + 60 * DAY;
            let in_period = |p: UnixTime, v: i64, key: &str, limit: Option<i64>| UsageReport {
                period_start: p,
                at: p + 5,
                limit,
                ..delta("t", "api_calls", v, key)
            };
            let o = s.record_usage(&in_period(p1, 7, "a", None)).await.expect("usage");
            assert_eq!(o.used, 7);
            assert_eq!(s.usage("t", "api_calls", p1).await.expect("usage"), 7);
            assert_eq!(
                s.usage("t", "api_calls", p2).await.expect("usage"),
                0,
                "nothing recorded yet in the newer period"
            );

            // The first report of a newer period resets the counter.
            let o = s.record_usage(&in_period(p2, 2, "b", None)).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 2));
            assert_eq!(s.usage("t", "api_calls", p2).await.expect("usage"), 2);
            let o = s.record_usage(&in_period(p2, 3, "c", Some(5))).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 5));
            let o = s.record_usage(&in_period(p2, 1, "d", Some(5))).await.expect("usage");
            assert_eq!((o.applied, o.used), (false, 5), "full in this period");

            // A full old period does not block the new one (rollover with enforce).
            assert_eq!(s.usage("t", "api_calls", p3).await.expect("usage"), 0);
            let o = s.record_usage(&in_period(p3, 4, "e", Some(5))).await.expect("usage");
            assert_eq!((o.applied, o.used), (true, 4));
            assert_eq!(s.usage("t", "api_calls", p3).await.expect("usage"), 4);
            // A rollover report that alone exceeds the limit is refused and does not reset.
            let p4 = T0 + 90 * DAY;
            let o = s.record_usage(&in_period(p4, 6, "f", Some(5))).await.expect("usage");
            assert!(!o.applied);
            assert_eq!(o.used, 0, "nothing used yet in the new period");
            assert_eq!(s.usage("t", "api_calls", p3).await.expect("usage"), 4);

            // SET rolls over too.
            let o = s
                .record_usage(&UsageReport { period_start: p4, ..report("t", "seats", UsageMode::Set, 3) })
                .await
                .expect("usage");
            assert_eq!(o.used, 3);
            assert_eq!(s.usage("t", "seats", p4).await.expect("usage"), 3);
            assert_eq!(s.usage("t", "seats", p4 + 30 * DAY).await.expect("usage"), 0);

            // Other features keep their own period.
            let o = s
                .record_usage(&UsageReport { period_start: p1, ..delta("t", "exports", 1, "x") })
                .await
                .expect("usage");
            assert_eq!(o.used, 1);
            assert_eq!(s.usage("t", "api_calls", p3).await.expect("usage"), 4);
        }

        pub async fn concurrent_enforced_usage_never_over_grants(db: Db) {
            // Two stores (two pools) on one database, like two replicas.
            let stores = [db.usage.clone(), db.peer().await.usage];
            let mut tasks = Vec::new();
            for i in 0..50 {
                let s = stores[i % 2].clone();
                tasks.push(tokio::spawn(async move {
                    let r = UsageReport { limit: Some(20), ..delta("hot", "api_calls", 1, &format!("key-{i}")) };
                    s.record_usage(&r).await
                }));
            }
            let mut applied_used = Vec::new();
            let mut refused = 0;
            for t in tasks {
                let o = t.await.expect("task").expect("record_usage");
                assert!(!o.duplicate);
                if o.applied {
                    applied_used.push(o.used);
                } else {
                    refused += 1;
                    assert_eq!(o.used, 20, "refused only when full");
                }
            }
            applied_used.sort_unstable();
            assert_eq!(applied_used, (1..=20).collect::<Vec<_>>(), "exactly 20 applied, each seeing its own count");
            assert_eq!(refused, 30);
            assert_eq!(db.usage.usage("hot", "api_calls", T0).await.expect("usage"), 20);
            // Replaying any key returns its original result.
            let replay = db
                .usage
                .record_usage(&UsageReport { limit: Some(20), ..delta("hot", "api_calls", 1, "key-7") })
                .await
                .expect("replay");
            assert!(replay.duplicate);
            assert_eq!(db.usage.usage("hot", "api_calls", T0).await.expect("usage"), 20);
        }
    }

    /// StripeLog. SQL only: a relay has none (its upstream applies webhooks).
    pub mod stripe {
        use crate::harness::Db;
        use crate::*;

        pub async fn stripe_subscription_event_applies(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "acme", put_tenant(None, None, None), T0).await;
            let e = SubEvent::new("evt_1", "sub_1", "cus_1", T0 + 100).hint("acme").plan("team", Some(12)).addon(
                "extra_seats",
                "si_2",
                3,
            );
            let o = apply(s, &e, T0 + 105).await;
            assert_eq!(o.status, StripeStatus::Applied);
            assert!(!o.duplicate);
            assert_eq!(o.tenant_id.as_deref(), Some("acme"));
            assert_eq!(o.revision, Some(2));
            assert_eq!(o.linked_customer.as_deref(), Some("cus_1"), "the tenant had no customer id");
            assert_eq!(o.error, None);

            let t = load(tenants, "acme").await;
            assert_eq!(t.revision, 2);
            assert_eq!(t.subscriptions, vec![e.facts.subscription.clone()]);
            assert_eq!(t.addon_grants, e.facts.addons);
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_1"));
            let last = t.last_change.expect("last change");
            assert_eq!(last.actor, "stripe");
            assert_eq!(last.origin, "evt_1");

            let a = &audit_all(&*db.audit, "acme").await[0];
            assert_eq!(a.action, "stripe_subscription");
            assert_eq!(a.actor, "stripe");
            assert_eq!(a.origin, "evt_1");
            assert_eq!(a.revision, 2);
            assert_eq!(json_of(&a.after)["subscription"]["id"], json!("sub_1"));

            let stored = s.stripe_event("evt_1").await.expect("stripe_event").expect("stored");
            assert_eq!(stored.id, "evt_1");
            assert_eq!(stored.event_type, "customer.subscription.updated");
            assert_eq!(stored.created, T0 + 100);
            assert!(!stored.livemode);
            assert_eq!(stored.status, StripeStatus::Applied);
            assert_eq!(stored.tenant_id.as_deref(), Some("acme"));
            assert_eq!(stored.customer_id.as_deref(), Some("cus_1"));
            assert_eq!(stored.error, None);
            assert_eq!(stored.received_at, T0 + 105);
            assert_eq!(stored.applied_at, Some(T0 + 105));
            assert_eq!(stored.payload, e.env.payload);
            assert_eq!(s.stripe_event("evt_missing").await.expect("stripe_event"), None);

            // A newer event updates the same row and replaces the subscription's grants.
            let e2 = SubEvent::new("evt_2", "sub_1", "cus_1", T0 + 200)
                .status(SubscriptionStatus::PastDue)
                .addon("sso", "si_3", 1);
            let o = apply(s, &e2, T0 + 205).await;
            assert_eq!(o.status, StripeStatus::Applied);
            assert_eq!(o.tenant_id.as_deref(), Some("acme"), "found by customer id");
            assert_eq!(o.revision, Some(3));
            assert_eq!(o.linked_customer, None, "already linked");
            let t = load(tenants, "acme").await;
            assert_eq!(t.subscriptions, vec![e2.facts.subscription.clone()]);
            assert_eq!(t.addon_grants, e2.facts.addons);

            // A tenant named only by the hint is created by the event.
            let e3 = SubEvent::new("evt_3", "sub_9", "cus_9", T0 + 300).hint("newco");
            let o = apply(s, &e3, T0 + 300).await;
            assert_eq!(o.status, StripeStatus::Applied);
            assert_eq!(o.revision, Some(1));
            let t = load(tenants, "newco").await;
            assert!(t.known);
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_9"));
            assert_eq!(t.subscriptions.len(), 1);
        }

        pub async fn stripe_duplicate_event_changes_nothing(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "acme", put_tenant(Some("cus_1"), None, None), T0).await;
            let e = SubEvent::new("evt_1", "sub_1", "cus_1", T0 + 100).hint("acme");
            assert_eq!(apply(s, &e, T0 + 100).await.status, StripeStatus::Applied);
            let before = load(tenants, "acme").await;

            // Same id again, even with different content: acknowledged, nothing done.
            let changed =
                SubEvent::new("evt_1", "sub_1", "cus_1", T0 + 500).hint("acme").status(SubscriptionStatus::Canceled);
            for e in [&e, &changed] {
                let o = apply(s, e, T0 + 600).await;
                assert!(o.duplicate, "{o:?}");
                assert_eq!(o.revision, None);
            }
            assert_eq!(load(tenants, "acme").await, before);
            assert_eq!(audit_all(&*db.audit, "acme").await.len(), 2);
            let stored = s.stripe_event("evt_1").await.expect("stripe_event").expect("stored");
            assert_eq!(stored.status, StripeStatus::Applied);
            assert_eq!(stored.received_at, T0 + 100, "the first delivery is kept");
            assert_eq!(s.stripe_events(None, None, 100).await.expect("list").len(), 1);
        }

        pub async fn stripe_older_event_is_stale(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "acme", put_tenant(None, None, None), T0).await;
            let newer = SubEvent::new("evt_new", "sub_1", "cus_1", T0 + 200).hint("acme");
            assert_eq!(apply(s, &newer, T0 + 200).await.status, StripeStatus::Applied);
            let before = load(tenants, "acme").await;

            // Delivered later, created earlier: must not undo the newer state.
            let older = SubEvent::new("evt_old", "sub_1", "cus_1", T0 + 100)
                .hint("acme")
                .status(SubscriptionStatus::Canceled)
                .addon("sso", "si_1", 1);
            let o = apply(s, &older, T0 + 300).await;
            assert_eq!(o.status, StripeStatus::Stale);
            assert!(!o.duplicate);
            assert_eq!(o.tenant_id.as_deref(), Some("acme"));
            assert_eq!(o.revision, None);
            assert_eq!(load(tenants, "acme").await, before, "nothing changed, revision not bumped");
            let stored = s.stripe_event("evt_old").await.expect("stripe_event").expect("stored");
            assert_eq!(stored.status, StripeStatus::Stale);
            assert_eq!(stored.applied_at, None);

            // Same second: a status never moves backwards (active → trialing is stale) …
            let same_second =
                SubEvent::new("evt_same", "sub_1", "cus_1", T0 + 200).hint("acme").status(SubscriptionStatus::Trialing);
            assert_eq!(apply(s, &same_second, T0 + 301).await.status, StripeStatus::Stale);
            // … but may move forward (active → canceled).
            let ended =
                SubEvent::new("evt_end", "sub_1", "cus_1", T0 + 200).hint("acme").status(SubscriptionStatus::Canceled);
            assert_eq!(apply(s, &ended, T0 + 302).await.status, StripeStatus::Applied);
            let t = load(tenants, "acme").await;
            assert_eq!(t.subscriptions[0].status, SubscriptionStatus::Canceled);
            assert_eq!(t.revision, before.revision + 1);
        }

        pub async fn stripe_unknown_customer_is_pending_until_the_tenant_appears(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            let e = SubEvent::new("evt_p", "sub_p", "cus_nobody", T0 + 100).addon("sso", "si_p", 1);
            let o = apply(s, &e, T0 + 100).await;
            assert_eq!(o.status, StripeStatus::PendingTenant);
            assert!(!o.duplicate);
            assert_eq!(o.tenant_id, None);
            assert_eq!(o.revision, None);

            let other = SubEvent::new("evt_q", "sub_q", "cus_other", T0 + 50);
            assert_eq!(apply(s, &other, T0 + 101).await.status, StripeStatus::PendingTenant);
            let earlier = SubEvent::new("evt_p0", "sub_p", "cus_nobody", T0 + 90);
            assert_eq!(apply(s, &earlier, T0 + 102).await.status, StripeStatus::PendingTenant);

            let pending = s.pending_stripe_events("cus_nobody").await.expect("pending");
            let ids: Vec<_> = pending.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(ids, ["evt_p0", "evt_p"], "oldest first, only this customer");
            assert!(pending.iter().all(|p| p.status == StripeStatus::PendingTenant));
            assert!(pending.iter().all(|p| p.customer_id.as_deref() == Some("cus_nobody")));
            assert!(pending.iter().all(|p| p.tenant_id.is_none() && p.applied_at.is_none()));
            assert!(s.pending_stripe_events("cus_unknown").await.expect("pending").is_empty());

            // The tenant appears with that customer id; re-applying the stored events applies them.
            mutate(tenants, "late", put_tenant(Some("cus_nobody"), None, None), T0 + 200).await;
            let replay = Replay { actor: "ops".into(), rationale: "tenant linked".into() };
            for p in &pending {
                let (env, tr) = if p.id == "evt_p" {
                    (e.env.clone(), e.translation())
                } else {
                    (earlier.env.clone(), earlier.translation())
                };
                let o = s.apply_stripe_event(&env, &tr, Some(&replay), T0 + 300).await.expect("replay");
                assert!(!o.duplicate);
                assert_eq!(o.tenant_id.as_deref(), Some("late"), "{o:?}");
                assert_eq!(o.status, StripeStatus::Applied, "{o:?}");
            }
            assert!(s.pending_stripe_events("cus_nobody").await.expect("pending").is_empty());
            let t = load(tenants, "late").await;
            assert_eq!(t.revision, 3);
            assert_eq!(t.subscriptions, vec![e.facts.subscription.clone()]);
            assert_eq!(t.addon_grants, e.facts.addons);
            let a = &audit_all(&*db.audit, "late").await[0];
            assert_eq!(a.actor, "ops");
            assert!(a.rationale.contains("tenant linked"), "{}", a.rationale);
            let stored = s.stripe_event("evt_p").await.expect("stripe_event").expect("stored");
            assert_eq!(stored.status, StripeStatus::Applied);
            assert_eq!(stored.tenant_id.as_deref(), Some("late"));
            assert_eq!(stored.applied_at, Some(T0 + 300));
            // The other customer's event still waits.
            assert_eq!(s.pending_stripe_events("cus_other").await.expect("pending").len(), 1);
        }

        pub async fn stripe_translation_errors_fail_entitling_events(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "acme", put_tenant(Some("cus_1"), None, None), T0).await;
            let before = load(tenants, "acme").await;
            let e = SubEvent::new("evt_bad", "sub_1", "cus_1", T0 + 100)
                .hint("acme")
                .error("unknown price `price_nope` on subscription item si_1")
                .error("second problem");
            let o = apply(s, &e, T0 + 100).await;
            assert_eq!(o.status, StripeStatus::Failed);
            assert!(!o.duplicate);
            assert_eq!(o.revision, None);
            let err = o.error.expect("error reported");
            assert!(err.contains("price_nope") && err.contains("second problem"), "{err}");
            assert_eq!(load(tenants, "acme").await, before, "errors never grant");

            let stored = s.stripe_event("evt_bad").await.expect("stripe_event").expect("stored");
            assert_eq!(stored.status, StripeStatus::Failed);
            let stored_err = stored.error.expect("error stored");
            assert!(stored_err.contains("price_nope") && stored_err.contains("second problem"), "{stored_err}");
            assert_eq!(stored.applied_at, None);
            assert_eq!(stored.payload, e.env.payload);

            // Trialing and past_due entitle as well.
            for (id, status) in [("evt_t", SubscriptionStatus::Trialing), ("evt_pd", SubscriptionStatus::PastDue)] {
                let e =
                    SubEvent::new(id, "sub_1", "cus_1", T0 + 200).hint("acme").status(status).error("unknown price");
                assert_eq!(apply(s, &e, T0 + 200).await.status, StripeStatus::Failed, "{status:?}");
            }
            assert_eq!(load(tenants, "acme").await, before);
            let failed = s.stripe_events(None, Some(StripeStatus::Failed), 100).await.expect("list");
            assert_eq!(failed.len(), 3);
        }

        pub async fn stripe_unparseable_event_fails(db: Db) {
            let s = db.stripe();
            let env = envelope("evt_garbled", "customer.subscription.updated", T0);
            let o =
                s.apply_stripe_event(&env, &Err("missing field `items`".into()), None, T0 + 1).await.expect("apply");
            assert_eq!(o.status, StripeStatus::Failed);
            assert!(o.error.as_deref().is_some_and(|e| e.contains("missing field `items`")), "{o:?}");
            let stored = s.stripe_event("evt_garbled").await.expect("get").expect("stored");
            assert_eq!(stored.status, StripeStatus::Failed);
            assert!(stored.error.as_deref().is_some_and(|e| e.contains("missing field `items`")));
            assert_eq!(stored.payload, env.payload);
            // An ignored event type is recorded as ignored.
            let env = envelope("evt_other", "customer.created", T0);
            let o = s
                .apply_stripe_event(&env, &Ok(Translation { fact: Fact::Ignored, errors: vec![] }), None, T0 + 2)
                .await
                .expect("apply");
            assert_eq!((o.status, o.duplicate), (StripeStatus::Ignored, false));
            let stored = s.stripe_event("evt_other").await.expect("get").expect("stored");
            assert_eq!(stored.status, StripeStatus::Ignored);
        }

        pub async fn stripe_errors_on_an_ending_subscription_still_apply(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "acme", put_tenant(None, None, None), T0).await;
            let live = SubEvent::new("evt_1", "sub_1", "cus_1", T0 + 100).hint("acme").addon("sso", "si_1", 1);
            assert_eq!(apply(s, &live, T0 + 100).await.status, StripeStatus::Applied);
            // Taking access away is safe even when an item cannot be mapped.
            let ended = SubEvent::new("evt_2", "sub_1", "cus_1", T0 + 200)
                .hint("acme")
                .status(SubscriptionStatus::Canceled)
                .error("unknown price `price_legacy`");
            let o = apply(s, &ended, T0 + 200).await;
            assert_eq!(o.status, StripeStatus::Applied);
            assert!(o.error.as_deref().is_some_and(|e| e.contains("price_legacy")), "{o:?}");
            let t = load(tenants, "acme").await;
            assert_eq!(t.subscriptions[0].status, SubscriptionStatus::Canceled);
            assert!(t.addon_grants.is_empty(), "the subscription's grants follow its items");
            let stored = s.stripe_event("evt_2").await.expect("get").expect("stored");
            assert_eq!(stored.status, StripeStatus::Applied);
            assert!(stored.error.as_deref().is_some_and(|e| e.contains("price_legacy")));
        }

        pub async fn stripe_events_list_by_tenant_and_status(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "a", put_tenant(None, None, None), T0).await;
            mutate(tenants, "b", put_tenant(None, None, None), T0).await;
            let a1 = SubEvent::new("evt_a1", "sub_a", "cus_a", T0 + 100).hint("a");
            let a0 = SubEvent::new("evt_a0", "sub_a", "cus_a", T0 + 50).hint("a");
            let a2 = SubEvent::new("evt_a2", "sub_a", "cus_a", T0 + 300).hint("a");
            let b1 = SubEvent::new("evt_b1", "sub_b", "cus_b", T0 + 100).hint("b");
            let p1 = SubEvent::new("evt_p1", "sub_p", "cus_p", T0 + 100);
            let f1 = SubEvent::new("evt_f1", "sub_f", "cus_f", T0 + 100).error("bad price");
            let plan = [
                (&a1, StripeStatus::Applied),
                (&a0, StripeStatus::Stale),
                (&b1, StripeStatus::Applied),
                (&p1, StripeStatus::PendingTenant),
                (&f1, StripeStatus::Failed),
                (&a2, StripeStatus::Applied),
            ];
            for (i, (e, status)) in plan.iter().enumerate() {
                let o = apply(s, e, T0 + 1000 + i as i64).await;
                assert_eq!(o.status, *status, "{}", e.env.id);
            }
            let ids = |v: Vec<entitlements::store::StoredEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();

            assert_eq!(
                ids(s.stripe_events(None, None, 100).await.expect("list")),
                ["evt_a2", "evt_f1", "evt_p1", "evt_b1", "evt_a0", "evt_a1"],
                "newest first"
            );
            assert_eq!(ids(s.stripe_events(Some("a"), None, 100).await.expect("list")), ["evt_a2", "evt_a0", "evt_a1"]);
            assert_eq!(ids(s.stripe_events(Some("b"), None, 100).await.expect("list")), ["evt_b1"]);
            assert_eq!(
                ids(s.stripe_events(None, Some(StripeStatus::Applied), 100).await.expect("list")),
                ["evt_a2", "evt_b1", "evt_a1"]
            );
            assert_eq!(
                ids(s.stripe_events(Some("a"), Some(StripeStatus::Applied), 100).await.expect("list")),
                ["evt_a2", "evt_a1"]
            );
            assert_eq!(
                ids(s.stripe_events(Some("a"), Some(StripeStatus::Stale), 100).await.expect("list")),
                ["evt_a0"]
            );
            assert_eq!(
                ids(s.stripe_events(None, Some(StripeStatus::PendingTenant), 100).await.expect("list")),
                ["evt_p1"]
            );
            assert_eq!(ids(s.stripe_events(None, Some(StripeStatus::Failed), 100).await.expect("list")), ["evt_f1"]);
            assert!(s.stripe_events(None, Some(StripeStatus::Ignored), 100).await.expect("list").is_empty());
            assert!(s.stripe_events(Some("nobody"), None, 100).await.expect("list").is_empty());
            assert_eq!(ids(s.stripe_events(None, None, 2).await.expect("list")), ["evt_a2", "evt_f1"], "limit");
        }

        async fn apply_change(
            s: &dyn StripeLog,
            env: &Envelope,
            change: Fact,
            at: UnixTime,
        ) -> entitlements::store::StripeOutcome {
            let tr = Ok(Translation { fact: change, errors: vec![] });
            s.apply_stripe_event(env, &tr, None, at)
                .await
                .unwrap_or_else(|e| panic!("apply_stripe_event {}: {e}", env.id))
        }

        pub async fn stripe_checkout_records_a_provisional_subscription(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            let checkout = |tenant: Option<&str>, customer: &str, sub: &str, addon: Option<&str>| Fact::Checkout {
                session_id: format!("cs_{sub}"),
                tenant_hint: tenant.map(str::to_string),
                customer_id: Some(customer.into()),
                subscription_id: sub.into(),
                addon: addon.map(str::to_string),
            };
            let env = envelope("evt_cs", "checkout.session.completed", T0 + 100);
            let o = apply_change(s, &env, checkout(Some("acme"), "cus_c", "sub_c", Some("sso")), T0 + 100).await;
            assert_eq!(o.status, StripeStatus::Applied);
            assert_eq!(o.tenant_id.as_deref(), Some("acme"));
            assert_eq!(o.revision, Some(1), "the session creates the tenant");
            assert_eq!(o.linked_customer.as_deref(), Some("cus_c"));
            let t = load(tenants, "acme").await;
            assert_eq!(t.stripe_customer_id.as_deref(), Some("cus_c"));
            assert_eq!(t.subscriptions.len(), 1);
            let sub = &t.subscriptions[0];
            assert_eq!((sub.id.as_str(), sub.status, sub.last_event_created), ("sub_c", SubscriptionStatus::Active, 0));
            assert_eq!(sub.plan, None);
            assert_eq!(sub.last_event_id, "evt_cs");
            assert_eq!(t.addon_grants.len(), 1);
            assert_eq!(t.addon_grants[0].addon, "sso");
            assert_eq!(
                t.addon_grants[0].origin,
                GrantOrigin::Stripe { subscription_id: "sub_c".into(), item_id: "checkout:cs_sub_c".into() }
            );
            assert_eq!(audit_all(&*db.audit, "acme").await[0].action, "stripe_checkout");

            // The subscription's own event replaces the provisional row and the session's grant.
            let e = SubEvent::new("evt_sub", "sub_c", "cus_c", T0 + 101).addon("sso", "si_sso", 1);
            let o = apply(s, &e, T0 + 102).await;
            assert_eq!(o.status, StripeStatus::Applied);
            let t = load(tenants, "acme").await;
            assert_eq!(t.subscriptions, vec![e.facts.subscription.clone()]);
            assert_eq!(t.addon_grants, e.facts.addons);

            // A session for an unknown customer without a tenant waits.
            let env = envelope("evt_cs2", "checkout.session.completed", T0 + 200);
            let o = apply_change(s, &env, checkout(None, "cus_z", "sub_z", None), T0 + 200).await;
            assert_eq!(o.status, StripeStatus::PendingTenant);
            assert_eq!(s.pending_stripe_events("cus_z").await.expect("pending").len(), 1);
        }

        pub async fn stripe_invoices_move_the_subscription_status(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "acme", put_tenant(Some("cus_1"), None, None), T0).await;
            let e = SubEvent::new("evt_sub", "sub_1", "cus_1", T0 + 100).hint("acme");
            assert_eq!(apply(s, &e, T0 + 100).await.status, StripeStatus::Applied);
            let invoice = |paid: bool, sub: &str| Fact::Invoice {
                customer_id: Some("cus_1".into()),
                subscription_id: Some(sub.into()),
                paid,
            };

            let failed = envelope("evt_inv_failed", "invoice.payment_failed", T0 + 200);
            let o = apply_change(s, &failed, invoice(false, "sub_1"), T0 + 200).await;
            assert_eq!(o.status, StripeStatus::Applied);
            assert_eq!(o.tenant_id.as_deref(), Some("acme"));
            assert_eq!(o.revision, Some(3));
            let sub = load(tenants, "acme").await.subscriptions.remove(0);
            assert_eq!(sub.status, SubscriptionStatus::PastDue);
            assert_eq!((sub.last_event_created, sub.last_event_id.as_str()), (T0 + 200, "evt_inv_failed"));
            assert_eq!(sub.plan, e.facts.subscription.plan, "the rest of the row stays");

            let paid = envelope("evt_inv_paid", "invoice.paid", T0 + 300);
            assert_eq!(apply_change(s, &paid, invoice(true, "sub_1"), T0 + 300).await.status, StripeStatus::Applied);
            assert_eq!(load(tenants, "acme").await.subscriptions[0].status, SubscriptionStatus::Active);

            // An older failure does not undo the payment.
            let old = envelope("evt_inv_old", "invoice.payment_failed", T0 + 250);
            assert_eq!(apply_change(s, &old, invoice(false, "sub_1"), T0 + 301).await.status, StripeStatus::Stale);
            let t = load(tenants, "acme").await;
            assert_eq!(t.subscriptions[0].status, SubscriptionStatus::Active);
            assert_eq!(t.revision, 4);

            // An invoice of a subscription we do not know changes nothing.
            let unknown = envelope("evt_inv_unknown", "invoice.paid", T0 + 400);
            assert_eq!(apply_change(s, &unknown, invoice(true, "sub_x"), T0 + 400).await.status, StripeStatus::Ignored);
            assert_eq!(load(tenants, "acme").await.revision, 4);
        }

        pub async fn stripe_entitlement_summary_replaces_its_grants(db: Db) {
            let (s, tenants) = (db.stripe(), &*db.tenants);
            mutate(tenants, "acme", put_tenant(Some("cus_s"), None, None), T0).await;
            mutate(tenants, "acme", Command::GrantAddOn { addon: "sso".into(), quantity: 1, expires_at: None }, T0)
                .await;
            let summary = |keys: &[&str]| Fact::EntitlementSummary {
                customer_id: "cus_s".into(),
                lookup_keys: keys.iter().map(|k| (*k).to_string()).collect(),
            };
            let ty = "entitlements.active_entitlement_summary.updated";
            let first = envelope("evt_sum1", ty, T0 + 100);
            let o = apply_change(s, &first, summary(&["sso", "beta_ui"]), T0 + 100).await;
            assert_eq!(o.status, StripeStatus::Applied);
            assert_eq!(o.tenant_id.as_deref(), Some("acme"));
            let entitlement_keys = |t: &TenantState| {
                let mut keys: Vec<String> = t
                    .addon_grants
                    .iter()
                    .filter_map(|g| match &g.origin {
                        GrantOrigin::StripeEntitlement { lookup_key } => Some(lookup_key.clone()),
                        _ => None,
                    })
                    .collect();
                keys.sort();
                keys
            };
            let t = load(tenants, "acme").await;
            assert_eq!(entitlement_keys(&t), ["beta_ui", "sso"]);
            assert_eq!(t.addon_grants.len(), 3, "the manual grant stays beside them");

            let second = envelope("evt_sum2", ty, T0 + 200);
            assert_eq!(apply_change(s, &second, summary(&["sso"]), T0 + 200).await.status, StripeStatus::Applied);
            assert_eq!(entitlement_keys(&load(tenants, "acme").await), ["sso"]);

            // An older summary does not undo a newer one.
            let older = envelope("evt_sum0", ty, T0 + 150);
            let o = apply_change(s, &older, summary(&["sso", "beta_ui", "audit_log"]), T0 + 201).await;
            assert_eq!(o.status, StripeStatus::Stale);
            let t = load(tenants, "acme").await;
            assert_eq!(entitlement_keys(&t), ["sso"]);
            assert!(t.addon_grants.iter().any(|g| g.origin == GrantOrigin::Manual));

            // An empty summary removes every entitlement grant, not the manual one.
            let empty = envelope("evt_sum3", ty, T0 + 300);
            assert_eq!(apply_change(s, &empty, summary(&[]), T0 + 300).await.status, StripeStatus::Applied);
            let t = load(tenants, "acme").await;
            assert!(entitlement_keys(&t).is_empty());
            assert_eq!(t.addon_grants.len(), 1);

            // Unknown customer: waits for its tenant.
            let env = envelope("evt_sum_x", ty, T0 + 400);
            let o = apply_change(
                s,
                &env,
                Fact::EntitlementSummary { customer_id: "cus_nobody".into(), lookup_keys: vec!["sso".into()] },
                T0 + 400,
            )
            .await;
            assert_eq!(o.status, StripeStatus::PendingTenant);
        }

        /// Rounds of each race: one interleaving may happen to be harmless, several rarely are.
        const RACE_ROUNDS: i64 = 5;

        /// Stripe does not order deliveries, and replicas apply them concurrently: whatever the
        /// interleaving, a subscription ends in the state of its newest event.
        async fn racing_events(db: &Db, with_base: bool) {
            let stores = [db.stripe.clone(), db.peer().await.stripe].map(|s| s.expect("a Stripe log"));
            mutate(&*db.tenants, "acme", put_tenant(Some("cus_1"), None, None), T0).await;
            let mut expected_revision = 1;
            let n = 20_i64;
            for round in 0..RACE_ROUNDS {
                let sub_id = format!("sub_{round}");
                if with_base {
                    let base = SubEvent::new(&format!("evt_{round}_base"), &sub_id, "cus_1", T0).hint("acme");
                    assert_eq!(apply(db.stripe(), &base, T0).await.status, StripeStatus::Applied);
                    expected_revision += 1;
                }
                let mut tasks = Vec::new();
                // Newest first, so that older events arrive while newer ones are in flight.
                for i in (1..=n).rev() {
                    let s = stores[(i % 2) as usize].clone();
                    let sub_id = sub_id.clone();
                    tasks.push(tokio::spawn(async move {
                        let e = SubEvent::new(&format!("evt_{round}_{i}"), &sub_id, "cus_1", T0 + i)
                            .hint("acme")
                            .plan("team", Some(i))
                            .addon("extra_seats", &format!("si_{round}_{i}"), i);
                        s.apply_stripe_event(&e.env, &e.translation(), None, T0 + 1000).await
                    }));
                }
                let mut applied = 0_u64;
                for t in tasks {
                    let o = t.await.expect("task").expect("apply_stripe_event");
                    match o.status {
                        StripeStatus::Applied => applied += 1,
                        StripeStatus::Stale => {}
                        other => panic!("unexpected status {other:?}"),
                    }
                }
                expected_revision += applied;
                let t = load(&*db.tenants, "acme").await;
                let sub = t.subscriptions.iter().find(|s| s.id == sub_id).expect("subscription row");
                assert_eq!(
                    (sub.last_event_created, sub.last_event_id.clone(), sub.seats),
                    (T0 + n, format!("evt_{round}_{n}"), Some(n)),
                    "round {round}: the newest event wins ({applied} of {n} applied)"
                );
                let grants: Vec<_> = t
                    .addon_grants
                    .iter()
                    .filter(
                        |g| matches!(&g.origin, GrantOrigin::Stripe { subscription_id, .. } if *subscription_id == sub_id),
                    )
                    .map(|g| (g.addon.as_str(), g.quantity))
                    .collect();
                assert_eq!(grants, [("extra_seats", n)], "round {round}: only the newest event's items are granted");
                assert_eq!(t.revision, expected_revision, "round {round}: one revision per applied event");
            }
        }

        pub async fn concurrent_stripe_events_keep_the_newest(db: Db) {
            racing_events(&db, true).await;
        }

        pub async fn concurrent_first_stripe_events_keep_the_newest(db: Db) {
            racing_events(&db, false).await;
        }

        pub async fn concurrent_entitlement_summaries_keep_the_newest(db: Db) {
            let stores = [db.stripe.clone(), db.peer().await.stripe].map(|s| s.expect("a Stripe log"));
            mutate(&*db.tenants, "acme", put_tenant(Some("cus_s"), None, None), T0).await;
            let n = 20_i64;
            for round in 0..RACE_ROUNDS {
                let mut tasks = Vec::new();
                for i in (1..=n).rev() {
                    let s = stores[(i % 2) as usize].clone();
                    tasks.push(tokio::spawn(async move {
                        let created = T0 + round * 100 + i;
                        let env = envelope(
                            &format!("evt_sum_{round}_{i}"),
                            "entitlements.active_entitlement_summary.updated",
                            created,
                        );
                        let change = Fact::EntitlementSummary {
                            customer_id: "cus_s".into(),
                            lookup_keys: vec![format!("key_{round}_{i:02}")],
                        };
                        s.apply_stripe_event(&env, &Ok(Translation { fact: change, errors: vec![] }), None, created)
                            .await
                    }));
                }
                for t in tasks {
                    let o = t.await.expect("task").expect("apply_stripe_event");
                    assert!(matches!(o.status, StripeStatus::Applied | StripeStatus::Stale), "{o:?}");
                }
                let keys: Vec<_> = load(&*db.tenants, "acme").await.addon_grants.into_iter().map(|g| g.addon).collect();
                assert_eq!(
                    keys,
                    [format!("key_{round}_{n}")],
                    "round {round}: exactly the newest summary's entitlements"
                );
            }
        }
    }

    /// Migrating, and two `SqlStore`s on one database. SQL only.
    pub mod text {
        use crate::harness::Db;
        use crate::*;

        /// PostgreSQL cannot keep a NUL in text, SQLite can: every backend refuses it alike, as
        /// the caller's fault (INVALID_ARGUMENT), so a retry never wedges on it.
        pub async fn nul_is_refused_as_invalid_input_and_changes_nothing(db: Db) {
            let s = &*db.tenants;
            let put = Command::PutTenant { stripe_customer_id: Some("cus_\0x".into()), trial: None, archived: None };
            let r = s.mutate("t", &put, &by("alice", "r", db.t0)).await;
            assert!(db.is_invalid(&r, "stripe_customer_id"), "{r:?}");
            let ok = Command::PutTenant { stripe_customer_id: None, trial: None, archived: None };
            let r = s.mutate("t", &ok, &by("al\0ice", "r", db.t0)).await;
            assert!(db.is_invalid(&r, "actor"), "{r:?}");
            let r = s.mutate("t", &ok, &by("alice", "why\0", db.t0)).await;
            assert!(db.is_invalid(&r, "rationale"), "{r:?}");
            let r = db.usage.record_usage(&delta("t", "api_calls", 1, "key\0")).await;
            assert!(db.is_invalid(&r, "idempotency_key"), "{r:?}");
            // Nothing was written, and the store goes on working.
            assert!(!load(s, "t").await.known, "the refused changes created nothing");
            assert_eq!(mutate(s, "t", ok, db.t0).await, 1);
        }
    }

    pub mod shared_database {
        use crate::harness::Db;
        use crate::*;

        pub async fn migrate_is_idempotent_and_stores_share_the_database(db: Db) {
            // Opening a second store migrates again: a no-op on an up-to-date database.
            let other = db.peer().await;
            let second = SqlStore::connect(&db.url).await.expect("connect");
            second.migrate().await.expect("re-migrate");
            second.migrate().await.expect("re-migrate twice");
            // What one store writes, the others read (replicas share one database).
            let rev = mutate(&*db.tenants, "shared", put_tenant(Some("cus_s"), None, None), T0).await;
            assert_eq!(rev, 1);
            let seen = load(&*other.tenants, "shared").await;
            assert!(seen.known);
            assert_eq!(seen.revision, 1);
            assert_eq!(seen.stripe_customer_id.as_deref(), Some("cus_s"));
            assert_eq!(mutate(&second, "shared", put_tenant(None, None, Some(true)), T0 + 1).await, 2);
            assert!(load(&*db.tenants, "shared").await.archived);
            second.ping().await.expect("ping second store");
        }
    }

    /// The outbox: notices and webhook deliveries. SQL only. The store under test is opened on
    /// the case's database with an outbox (the example catalog's lifecycle, one endpoint).
    pub mod outbox {
        use std::sync::Arc;

        use entitlements::store::outbox::{OutboxConfig, Route};
        use entitlements::store::{AttemptOutcome, DeliveryFilter, DeliveryStatus, NoticeEvent, OutboxStore};
        use entitlements::thresholds::Threshold;

        use crate::harness::Db;
        use crate::*;

        async fn with_outbox(db: &Db) -> SqlStore {
            let catalog = entitlements::server::load_catalog(&crate::common::catalog_path()).expect("catalog");
            let routes = vec![Route { endpoint: "app".into(), events: Vec::new() }];
            crate::harness::open(&db.url).await.with_outbox(OutboxConfig { catalog: Arc::new(catalog), routes })
        }

        async fn start_trial(s: &SqlStore, tenant: &str) {
            let end = T0 + 14 * DAY;
            mutate(s, tenant, Command::ExtendTrial { extension: TrialExtension::Until(end) }, T0).await;
        }

        fn kinds(ns: &[NoticeEvent]) -> Vec<(Threshold, i64)> {
            ns.iter().map(|n| (n.threshold, n.days_left)).collect()
        }

        fn timeline() -> Vec<(Threshold, i64)> {
            use Threshold::*;
            vec![(TrialWarning, 7), (TrialWarning, 3), (TrialEnded, 0), (HardLocked, 0), (Archived, 0)]
        }

        pub async fn notices_are_emitted_once_when_due(db: Db) {
            let s = with_outbox(&db).await;
            start_trial(&s, "t").await;
            assert_eq!(s.next_notice_at().await.expect("next"), Some(T0 + 7 * DAY));
            assert!(s.emit_due_notices(T0 + 7 * DAY - 1, 10).await.expect("emit").is_empty(), "not yet due");
            let first = s.emit_due_notices(T0 + 7 * DAY, 10).await.expect("emit");
            assert_eq!(kinds(&first), timeline()[..1]);
            assert_eq!(first[0].at, T0 + 7 * DAY);
            assert!(s.emit_due_notices(T0 + 7 * DAY, 10).await.expect("emit").is_empty(), "once");
            assert_eq!(s.next_notice_at().await.expect("next"), Some(T0 + 11 * DAY));
            // Catching up (the process was down): every crossing since, in order, once.
            let rest = s.emit_due_notices(T0 + 100 * DAY, 10).await.expect("emit");
            assert_eq!(kinds(&rest), timeline()[1..]);
            assert!(s.emit_due_notices(T0 + 200 * DAY, 10).await.expect("emit").is_empty());
            assert_eq!(s.next_notice_at().await.expect("next"), None);
            // The same notices, durably, for a watcher coming back.
            let stored = s.notices_after(first[0].id - 1, 100).await.expect("stored");
            assert_eq!(kinds(&stored), timeline());
            assert_eq!(s.last_notice_id().await.expect("last"), stored[4].id);
        }

        /// A tenant saved without an outbox (before the upgrade that added notices) has no
        /// schedule; scheduling it starts its timeline then: later crossings are emitted.
        pub async fn tenants_stored_before_notices_are_scheduled(db: Db) {
            start_trial(&crate::harness::open(&db.url).await, "old").await;
            let s = with_outbox(&db).await;
            assert_eq!(s.next_notice_at().await.expect("next"), None, "never scheduled");
            let now = T0 + 9 * DAY;
            assert_eq!(s.schedule_unscheduled(now, 10).await.expect("schedule"), 1);
            assert_eq!(s.schedule_unscheduled(now, 10).await.expect("schedule"), 0, "once");
            assert_eq!(s.next_notice_at().await.expect("next"), Some(T0 + 11 * DAY), "the 7-day mark had passed");
            let rest = s.emit_due_notices(T0 + 100 * DAY, 10).await.expect("emit");
            assert_eq!(kinds(&rest), timeline()[1..]);
        }

        pub async fn concurrent_emitters_make_each_notice_once(db: Db) {
            let (a, b) = (with_outbox(&db).await, with_outbox(&db).await);
            for t in ["t1", "t2", "t3", "t4"] {
                start_trial(&a, t).await;
            }
            let now = T0 + 100 * DAY;
            let (x, y) = tokio::join!(a.emit_due_notices(now, 100), b.emit_due_notices(now, 100));
            let mut all: Vec<_> = x.expect("a").into_iter().chain(y.expect("b")).collect();
            all.sort_by_key(|n| n.id);
            assert_eq!(all.len(), 4 * timeline().len(), "each crossing once in total: {all:?}");
            for t in ["t1", "t2", "t3", "t4"] {
                let mine: Vec<_> = all.iter().filter(|n| n.tenant_id == t).cloned().collect();
                assert_eq!(kinds(&mine), timeline());
            }
        }

        pub async fn deliveries_are_leased_in_order_logged_and_redelivered(db: Db) {
            let s = with_outbox(&db).await;
            start_trial(&s, "t").await;
            mutate(&s, "t", Command::GrantAddOn { addon: "teams".into(), quantity: 1, expires_at: None }, T0 + 1).await;
            // Deliveries are scheduled on the host clock (milliseconds), not the tenant timeline.
            let now = entitlements::clock::host_unix_millis() + 1_000;
            // Only the tenant's oldest event is due; leased, it is not handed out twice.
            let first = s.claim_deliveries(now, 10_000, 10).await.expect("claim");
            assert_eq!(first.len(), 1);
            assert_eq!((first[0].endpoint.as_str(), first[0].event_type.as_str()), ("app", "tenant.changed"));
            assert!(first[0].payload.contains("extend_trial"), "{}", first[0].payload);
            assert!(s.claim_deliveries(now, 10_000, 10).await.expect("claim").is_empty(), "leased, and in order");
            let failed = entitlements::store::Attempt {
                attempt: 1,
                at_ms: now,
                status_code: Some(500),
                error: Some("HTTP 500".into()),
                duration_ms: 3,
            };
            s.record_attempt(first[0].id, &failed, AttemptOutcome::Retry { at_ms: now + 500 }).await.expect("record");
            assert!(s.claim_deliveries(now + 1, 10_000, 10).await.expect("claim").is_empty(), "retry not due yet");
            assert!(s.next_delivery_ms().await.expect("next").is_some_and(|t| t <= now + 500));
            let again = s.claim_deliveries(now + 500, 10_000, 10).await.expect("claim");
            assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), vec![first[0].id]);
            let ok = entitlements::store::Attempt { attempt: 2, status_code: Some(200), error: None, ..failed };
            s.record_attempt(first[0].id, &ok, AttemptOutcome::Delivered).await.expect("record");
            let second = s.claim_deliveries(now + 600, 10_000, 10).await.expect("claim");
            assert_eq!(second.len(), 1);
            assert!(second[0].payload.contains("grant_addon"), "{}", second[0].payload);

            let log = s.deliveries(&DeliveryFilter { limit: 10, ..Default::default() }).await.expect("log");
            let oldest = log.iter().find(|r| r.delivery.id == first[0].id).expect("logged");
            assert_eq!(oldest.delivery.status, DeliveryStatus::Delivered);
            let codes: Vec<_> = oldest.attempts.iter().map(|a| (a.attempt, a.status_code)).collect();
            assert_eq!(codes, vec![(1, Some(500)), (2, Some(200))]);
            // Given up (past its window): failed, and the tenant's next event is due.
            let gave_up =
                entitlements::store::Attempt { attempt: 1, status_code: None, error: Some("timeout".into()), ..failed };
            s.record_attempt(second[0].id, &gave_up, AttemptOutcome::GaveUp).await.expect("record");
            let failed_only = DeliveryFilter { status: Some(DeliveryStatus::Failed), limit: 10, ..Default::default() };
            let failed_log = s.deliveries(&failed_only).await.expect("log");
            assert_eq!(failed_log.iter().map(|r| r.delivery.id).collect::<Vec<_>>(), vec![second[0].id]);
            assert!(s.redeliver(first[0].id, now + 700).await.expect("redeliver"));
            assert!(!s.redeliver(first[0].id + 1_000, now).await.expect("unknown"), "no such delivery");
            let pending = s
                .deliveries(&DeliveryFilter { status: Some(DeliveryStatus::Pending), limit: 10, ..Default::default() })
                .await
                .expect("log");
            assert!(pending.iter().any(|r| r.delivery.id == first[0].id));
        }
    }

    /// Lists in byte-wise key order whatever the database's collation. SQL only: the keys are no
    /// catalog keys (upper case, `-`, `.`), which a relay's upstream refuses.
    pub mod collation {
        use crate::harness::Db;
        use crate::*;

        /// Both backends return a tenant's lists in the same (byte-wise key) order.
        pub async fn load_lists_are_ordered_by_key(db: Db) {
            let s = &*db.tenants;
            let keys = ["b", "a_b", "aa", "B", "a-c", "a", "Ab", "a.b", "ab"];
            for (i, k) in keys.iter().enumerate() {
                let at = T0 + i as i64;
                mutate(s, "t", Command::AssignPlan { plan: (*k).into(), expires_at: None }, at).await;
                mutate(s, "t", Command::GrantAddOn { addon: (*k).into(), quantity: 1, expires_at: None }, at).await;
                mutate(
                    s,
                    "t",
                    Command::SetOverride { feature: (*k).into(), value: Value::Bool(true), expires_at: None },
                    at,
                )
                .await;
            }
            let mut sorted: Vec<&str> = keys.to_vec();
            sorted.sort_unstable();
            let t = load(s, "t").await;
            let plans: Vec<_> = t.plan_assignments.iter().map(|a| a.plan.as_str()).collect();
            let addons: Vec<_> = t.addon_grants.iter().map(|g| g.addon.as_str()).collect();
            let features: Vec<_> = t.overrides.iter().map(|o| o.feature.as_str()).collect();
            assert_eq!(plans, sorted);
            assert_eq!(addons, sorted);
            assert_eq!(features, sorted);
        }
    }

    pub mod directory {
        use crate::harness::Db;
        use crate::*;

        /// Pages of whole tenant states in id order: `after` continues exactly where the last
        /// page ended, and each state is what `load` returns.
        pub async fn tenants_page_in_id_order_with_their_whole_state(db: Db) {
            let s = &*db.tenants;
            let dir = db.directory.as_deref().expect("a directory case on a backend without one");
            assert!(dir.tenants_after(None, 10).await.expect("empty list").is_empty());
            let ids = ["t-c", "t-a", "t-e", "t-b", "t-d"];
            for (i, id) in ids.iter().enumerate() {
                mutate(s, id, put_tenant(Some(&format!("cus_{id}")), None, None), T0 + i as i64).await;
            }
            let grant = Command::GrantAddOn { addon: "teams".into(), quantity: 2, expires_at: None };
            mutate(s, "t-b", grant, T0 + 10).await;
            mutate(s, "t-b", Command::AssignPlan { plan: "pro".into(), expires_at: None }, T0 + 11).await;

            let first = dir.tenants_after(None, 2).await.expect("page 1");
            let names = |page: &[TenantState]| page.iter().map(|t| t.tenant_id.clone()).collect::<Vec<_>>();
            assert_eq!(names(&first), ["t-a", "t-b"]);
            assert_eq!(first[1], load(s, "t-b").await, "a listed state is the loaded state");
            assert_eq!(first[1].addon_grants.len(), 1);
            let rest = dir.tenants_after(Some("t-b"), 10).await.expect("page 2");
            assert_eq!(names(&rest), ["t-c", "t-d", "t-e"]);
            assert!(
                rest.iter()
                    .all(|t| t.known && t.stripe_customer_id.as_deref() == Some(&format!("cus_{}", t.tenant_id)))
            );
            assert!(dir.tenants_after(Some("t-e"), 10).await.expect("past the end").is_empty());
        }
    }
}
