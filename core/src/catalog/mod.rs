//! The catalog: features, plans, add-ons, the Stripe price map, lifecycle policy (SPEC §2).
//!
//! The catalog is a code-owned TOML file. [`Catalog::from_toml`] parses it and validates
//! everything, collecting *every* problem with its location rather than stopping at the first.
//! Loading is pure: environment variables (for `${VAR}` price ids) come in as a lookup function.
//!
//! `model` holds what a catalog is, `load` how one is read and checked, section by section,
//! from the TOML shapes in `raw`.

mod load;
mod model;
mod raw;

pub use load::{CatalogError, Problem};
pub use model::{
    AddOn, Catalog, Edition, Enforcement, Feature, FeatureIdx, FeatureKind, Interval, Lifecycle, Period, Plan, Price,
    PriceComponent, PriceTarget, TrialOffer, Value,
};
