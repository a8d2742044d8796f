//! `benchdata`: synthetic data for the scale benchmarks (SPEC §9, BENCHMARKS.md).
//!
//! Two subcommands, both deterministic:
//!
//! - `benchdata catalog --features N [--base examples/catalog.toml]` prints a valid catalog with
//!   exactly N features: the base catalog plus synthetic features `f_0000`, `f_0001`, … in a
//!   realistic mix (7 in 10 boolean, then one config, one gauge, one monthly counter; a few
//!   booleans in shadow enforcement, a few sold only through the base's add-ons). Booleans are
//!   tiered by plan rank (a fifth on every plan, most from the second-lowest plan up, the rest on
//!   the top plans only); limits grow ×4 per plan rank and metered ones are often unlimited on
//!   the top plan. With N below the base's feature count, base features that no add-on grants,
//!   no plan's `seats_from_subscription` names and that are not `teams_integration` or
//!   `invoice_designer` are dropped (in reverse key order), so a 10-feature catalog still has the
//!   plans, the `teams` add-on, `teams_integration` and `invoice_designer`; asking for fewer than
//!   what remains is an error that says the minimum. The output is validated with the service's
//!   own parser before it is printed; a summary goes to stderr.
//!
//! - `benchdata seed --database-url URL --tenants N [--prefix t] [--plan pro]
//!   [--addons teams,ai_assistant]` migrates the database and bulk-inserts tenants
//!   `{prefix}0 .. {prefix}{N-1}`, each with a manual plan assignment and manual add-on grants
//!   (actor `benchdata`, rationale `benchmark seed`, revision 1), in `--chunk`-sized transactions
//!   of portable `WITH RECURSIVE … INSERT … SELECT … ON CONFLICT DO NOTHING` statements, so it
//!   works on SQLite and PostgreSQL and re-running it skips what exists. No audit events are
//!   written and no change notifications are sent: seed before starting servers (a running
//!   server may have cached the tenants as unknown).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use entitlements::catalog::Catalog;
use entitlements::store::sql::{Backend, SqlStore};
use entitlements::tenant::validate_tenant_id;
use sqlx::Connection;
use toml::{Table, Value};

/// Base features a generated catalog always keeps (the benchmarks ask about them).
const KEEP: [&str; 2] = ["teams_integration", "invoice_designer"];

#[derive(Debug, Parser)]
#[command(name = "benchdata", version, about = "Synthetic catalogs and bulk-seeded tenants for the benchmarks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a valid catalog with exactly N features (base catalog + synthetic ones) to stdout.
    Catalog {
        /// Total number of features in the output.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        features: u32,
        /// The catalog to start from.
        #[arg(long, default_value = "examples/catalog.toml")]
        base: PathBuf,
    },
    /// Migrate a database and bulk-insert tenants {prefix}0 .. {prefix}{N-1}.
    Seed {
        /// sqlite://PATH (or a bare path) or postgres://…
        #[arg(long)]
        database_url: String,
        /// Number of tenants.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        tenants: u64,
        /// Tenant id prefix.
        #[arg(long, default_value = "t")]
        prefix: String,
        /// Manually assigned plan ("" for none).
        #[arg(long, default_value = "pro")]
        plan: String,
        /// Manually granted add-ons, comma-separated ("" for none).
        #[arg(long, value_delimiter = ',', default_value = "teams,ai_assistant")]
        addons: Vec<String>,
        /// Check that the plan and add-ons exist in this catalog first.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Tenants per transaction.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        chunk: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Catalog { features, base } => catalog(features as usize, &base),
        Command::Seed { database_url, tenants, prefix, plan, addons, catalog, chunk } => {
            let addons: Vec<String> =
                addons.into_iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
            let seed = Seed { url: database_url, tenants, prefix, plan: plan.trim().to_string(), addons, chunk };
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(seed.run(catalog.as_deref())),
                Err(e) => Err(format!("tokio runtime: {e}")),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- catalog

fn table_mut<'a>(t: &'a mut Table, key: &str) -> Option<&'a mut Table> {
    t.get_mut(key).and_then(Value::as_table_mut)
}

/// Feature tables of every plan or add-on (`section` is `plans` or `addons`), by key.
fn grant_tables<'a>(doc: &'a mut Table, section: &str) -> Vec<(String, &'a mut Table)> {
    let Some(items) = table_mut(doc, section) else { return Vec::new() };
    items
        .iter_mut()
        .filter_map(|(k, v)| {
            let item = v.as_table_mut()?;
            let features = item.entry("features").or_insert_with(|| Value::Table(Table::new()));
            Some((k.clone(), features.as_table_mut()?))
        })
        .collect()
}

/// Kind of the i-th synthetic feature: 7 in 10 boolean, then config, gauge, counter.
fn synthetic_kind(i: usize) -> &'static str {
    match i % 10 {
        7 => "config",
        8 => "gauge",
        9 => "counter",
        _ => "boolean",
    }
}

fn catalog(n: usize, base: &std::path::Path) -> Result<(), String> {
    let src = std::fs::read_to_string(base).map_err(|e| format!("{}: {e}", base.display()))?;
    let mut doc: Table = src.parse().map_err(|e| format!("{}: {e}", base.display()))?;
    let base_keys: Vec<String> = match doc.get("features").and_then(Value::as_table) {
        Some(f) => f.keys().cloned().collect(),
        None => return Err(format!("{}: no [features]", base.display())),
    };

    // What the base refers to and must therefore keep.
    let mut referenced: BTreeSet<String> = KEEP.iter().map(|s| s.to_string()).collect();
    for (_, grants) in grant_tables(&mut doc, "addons") {
        referenced.extend(grants.keys().cloned());
    }
    if let Some(plans) = doc.get("plans").and_then(Value::as_table) {
        for plan in plans.values() {
            if let Some(s) = plan.get("seats_from_subscription").and_then(Value::as_str) {
                referenced.insert(s.to_string());
            }
        }
    }
    let mut droppable: Vec<String> = base_keys.iter().filter(|k| !referenced.contains(*k)).cloned().collect();
    droppable.sort_unstable_by(|a, b| b.cmp(a));
    let minimum = base_keys.len() - droppable.len();
    if n < minimum {
        return Err(format!(
            "--features {n}: {} needs at least {minimum} features (its add-ons, seat pricing and {} refer to them)",
            base.display(),
            KEEP.join(", ")
        ));
    }

    // Fewer than the base: drop unreferenced base features.
    let dropped: Vec<String> = droppable.into_iter().take(base_keys.len().saturating_sub(n)).collect();
    if let Some(features) = table_mut(&mut doc, "features") {
        for k in &dropped {
            features.remove(k);
        }
    }
    for (_, grants) in grant_tables(&mut doc, "plans") {
        for k in &dropped {
            grants.remove(k);
        }
    }

    // More than the base: add synthetic features and grant them.
    let synthetic = n.saturating_sub(base_keys.len());
    let width = synthetic.saturating_sub(1).to_string().len().max(4);
    let name = |i: usize| format!("f_{i:0width$}");
    let mut plan_order: Vec<(i64, String)> = doc
        .get("plans")
        .and_then(Value::as_table)
        .map(|plans| {
            plans.iter().map(|(k, p)| (p.get("rank").and_then(Value::as_integer).unwrap_or(0), k.clone())).collect()
        })
        .unwrap_or_default();
    plan_order.sort();
    let plan_pos = |key: &str| plan_order.iter().position(|(_, k)| k == key).unwrap_or(0);
    let top = plan_order.len().saturating_sub(1);
    let mut addon_keys: Vec<String> =
        doc.get("addons").and_then(Value::as_table).map(|a| a.keys().cloned().collect()).unwrap_or_default();
    addon_keys.sort();
    let addon_only = |i: usize| !addon_keys.is_empty() && synthetic_kind(i) == "boolean" && i % 50 == 13;

    if let Some(features) = table_mut(&mut doc, "features") {
        for i in 0..synthetic {
            let kind = synthetic_kind(i);
            let mut f = Table::new();
            f.insert("kind".into(), kind.into());
            f.insert("description".into(), format!("Synthetic {kind} feature {i} (benchdata)").into());
            match kind {
                "counter" => {
                    f.insert("period".into(), "month".into());
                }
                "config" => {
                    f.insert("fallback".into(), Value::Integer(limit_base(i)));
                }
                _ if i % 20 == 6 => {
                    f.insert("enforcement".into(), "shadow".into());
                }
                _ => {}
            }
            features.insert(name(i), Value::Table(f));
        }
    }
    for (plan, grants) in grant_tables(&mut doc, "plans") {
        let pos = plan_pos(&plan);
        for i in 0..synthetic {
            if let Some(v) = synthetic_grant(i, pos, top, addon_only(i)) {
                grants.insert(name(i), v);
            }
        }
    }
    for (addon, grants) in grant_tables(&mut doc, "addons") {
        let a = addon_keys.iter().position(|k| *k == addon).unwrap_or(0);
        for i in (0..synthetic).filter(|&i| addon_only(i) && (i / 50) % addon_keys.len() == a) {
            grants.insert(name(i), Value::Boolean(true));
        }
    }

    let body = toml::to_string(&doc).map_err(|e| format!("serializing the catalog: {e}"))?;
    let out = format!(
        "# Generated by `benchdata catalog --features {n} --base {}`: {} base feature(s) ({} dropped), {synthetic} synthetic.\n\n{body}",
        base.display(),
        base_keys.len() - dropped.len(),
        dropped.len(),
    );
    // Never print something the server would refuse.
    let parsed = Catalog::from_toml(&out, &|k| std::env::var(k).ok()).map_err(|e| format!("generated catalog: {e}"))?;
    if parsed.features.len() != n {
        return Err(format!("generated {} features instead of {n}", parsed.features.len()));
    }
    let count = |k: &str| parsed.features.iter().filter(|f| f.kind.name() == k).count();
    eprintln!(
        "benchdata: {n} features ({} boolean, {} config, {} gauge, {} counter; {} add-on only), {} plans, {} add-ons{}",
        count("boolean"),
        count("config"),
        count("gauge"),
        count("counter"),
        parsed.features.iter().filter(|f| f.addon_only).count(),
        parsed.plans_by_rank().len(),
        parsed.addons.len(),
        if dropped.is_empty() { String::new() } else { format!("; dropped {}", dropped.join(", ")) }
    );
    print!("{out}");
    Ok(())
}

/// The lowest plan's limit of the i-th synthetic numeric feature.
fn limit_base(i: usize) -> i64 {
    [5, 10, 25, 50, 100][(i / 10) % 5]
}

/// What the plan at rank position `pos` (0 = lowest, `top` = highest) grants of synthetic
/// feature `i`; `None` leaves it off / 0.
fn synthetic_grant(i: usize, pos: usize, top: usize, addon_only: bool) -> Option<Value> {
    match synthetic_kind(i) {
        "boolean" => {
            if addon_only {
                return None;
            }
            // A fifth on every plan, two fifths from a third of the way up, a fifth from two
            // thirds, a fifth on the top plan only.
            let frac = [0.0, 1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0, 1.0][i % 5];
            let from = (frac * top as f64).round() as usize;
            (pos >= from).then_some(Value::Boolean(true))
        }
        kind => {
            // Every third numeric feature is not on the lowest plan at all.
            if pos == 0 && top > 0 && (i / 10).is_multiple_of(3) {
                return None;
            }
            if pos == top && top > 0 && kind != "config" && (i / 10).is_multiple_of(2) {
                return Some(Value::String("unlimited".into()));
            }
            Some(Value::Integer(limit_base(i) * 4i64.pow(pos.min(10) as u32)))
        }
    }
}

// ---------------------------------------------------------------- seed

struct Seed {
    url: String,
    tenants: u64,
    prefix: String,
    plan: String,
    addons: Vec<String>,
    chunk: u64,
}

/// The ids `$1 ..= $2` as rows `n`, prefixed by `$3`: portable (SQLite and PostgreSQL).
/// SQLite needs a WHERE clause on an INSERT … SELECT with an upsert clause.
macro_rules! seq {
    () => {
        "WITH RECURSIVE seq(n) AS (SELECT CAST($1 AS BIGINT) UNION ALL SELECT n + 1 FROM seq WHERE n < $2) "
    };
}

const ACTOR: &str = "benchdata";
const RATIONALE: &str = "benchmark seed";

impl Seed {
    async fn run(&self, catalog: Option<&std::path::Path>) -> Result<(), String> {
        for id in [format!("{}0", self.prefix), format!("{}{}", self.prefix, self.tenants - 1)] {
            validate_tenant_id(&id).map_err(|e| format!("--prefix {:?}: `{id}`: {e}", self.prefix))?;
        }
        if let Some(path) = catalog {
            let c = entitlements::server::load_catalog(path).map_err(|e| e.to_string())?;
            if !self.plan.is_empty() && c.plan(&self.plan).is_none() {
                return Err(format!("--plan {}: not a plan of {}", self.plan, path.display()));
            }
            if let Some(a) = self.addons.iter().find(|a| c.addon(a).is_none()) {
                return Err(format!("--addons: `{a}` is not an add-on of {}", path.display()));
            }
        }
        let started = entitlements::clock::monotonic();
        let store = SqlStore::connect(&self.url).await.map_err(|e| format!("connect: {e}"))?;
        store.migrate().await.map_err(|e| format!("migrate: {e}"))?;
        let backend = store.backend();
        let mut conn = store.pool().acquire().await.map_err(|e| format!("connect: {e}"))?;
        if backend == Backend::Sqlite {
            // A bigger page cache for this connection only: the indexes stay in memory.
            sqlx::query("PRAGMA cache_size = -262144").execute(&mut *conn).await.map_err(|e| e.to_string())?;
        }
        let now = entitlements::clock::unix_now();
        let (mut tenants, mut plans, mut grants) = (0u64, 0u64, 0u64);
        let mut start = 0u64;
        let mut last_note = entitlements::clock::monotonic();
        while start < self.tenants {
            let last = (start + self.chunk).min(self.tenants) - 1;
            let (a, b) = (i64::try_from(start).unwrap_or(i64::MAX), i64::try_from(last).unwrap_or(i64::MAX));
            let mut tx = conn.begin().await.map_err(|e| e.to_string())?;
            tenants += sqlx::query(concat!(
                seq!(),
                "INSERT INTO tenants (tenant_id, revision, created_at, updated_at, last_actor, last_rationale, last_origin) \
                 SELECT $3 || CAST(n AS TEXT), 1, $4, $4, $5, $6, 'admin' FROM seq WHERE true \
                 ON CONFLICT (tenant_id) DO NOTHING"
            ))
            .bind(a)
            .bind(b)
            .bind(&self.prefix)
            .bind(now)
            .bind(ACTOR)
            .bind(RATIONALE)
            .execute(&mut *tx)
            .await
            .map_err(|e| format!("insert tenants: {e}"))?
            .rows_affected();
            if !self.plan.is_empty() {
                plans += sqlx::query(concat!(
                    seq!(),
                    "INSERT INTO plan_assignments (tenant_id, plan, actor, rationale, assigned_at, expires_at) \
                     SELECT $3 || CAST(n AS TEXT), $4, $5, $6, $7, NULL FROM seq WHERE true \
                     ON CONFLICT (tenant_id, plan) DO NOTHING"
                ))
                .bind(a)
                .bind(b)
                .bind(&self.prefix)
                .bind(&self.plan)
                .bind(ACTOR)
                .bind(RATIONALE)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("insert plan_assignments: {e}"))?
                .rows_affected();
            }
            for addon in &self.addons {
                grants += sqlx::query(concat!(
                    seq!(),
                    "INSERT INTO addon_grants (tenant_id, addon, origin, subscription_id, item_id, quantity, actor, rationale, granted_at, expires_at) \
                     SELECT $3 || CAST(n AS TEXT), $4, 'manual', NULL, NULL, 1, $5, $6, $7, NULL FROM seq WHERE true \
                     ON CONFLICT (tenant_id, addon, origin) DO NOTHING"
                ))
                .bind(a)
                .bind(b)
                .bind(&self.prefix)
                .bind(addon)
                .bind(ACTOR)
                .bind(RATIONALE)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("insert addon_grants: {e}"))?
                .rows_affected();
            }
            tx.commit().await.map_err(|e| format!("commit: {e}"))?;
            start = last + 1;
            if last_note.elapsed().as_secs() >= 5 && start < self.tenants {
                eprintln!("benchdata: {start}/{} tenants, {:.1}s", self.tenants, started.elapsed().as_secs_f64());
                last_note = entitlements::clock::monotonic();
            }
        }
        if backend == Backend::Sqlite {
            // Leave the database file complete: a server starting next does not replay a huge WAL.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *conn).await.map_err(|e| e.to_string())?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "seeded {}0..{}{} into {}: {tenants} new tenant(s), {plans} plan assignment(s), {grants} add-on grant(s) \
             (plan {:?}, add-ons {:?}) in {secs:.1}s ({:.0} tenants/s)",
            self.prefix,
            self.prefix,
            self.tenants - 1,
            redact(&self.url),
            if self.plan.is_empty() { "none" } else { &self.plan },
            self.addons,
            self.tenants as f64 / secs.max(1e-9),
        );
        Ok(())
    }
}

/// The URL without a password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact("postgres://postgres@127.0.0.1/db"), "postgres://postgres@127.0.0.1/db");
        assert_eq!(redact("/tmp/x.db"), "/tmp/x.db");
    }

    #[test]
    fn limits_grow_with_rank() {
        for i in (0..100).filter(|&i| synthetic_kind(i) == "config") {
            let v: Vec<i64> = (0..4).filter_map(|p| synthetic_grant(i, p, 3, false)?.as_integer()).collect();
            assert!(v.windows(2).all(|w| w[0] < w[1]), "{i}: {v:?}");
        }
    }
}
