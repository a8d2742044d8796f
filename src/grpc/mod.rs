//! gRPC (SPEC §4): the two tonic services, the conversions between core types and protobuf
//! ([`convert`]), and — in one place — the mapping of errors to gRPC statuses.

mod admin;
pub mod codec;
pub mod convert;
mod data;
mod flagd;
mod idle;
mod overload;

pub use admin::AdminApi;
pub use data::DataApi;
pub use flagd::FlagdApi;
pub use idle::ActivityLayer;
pub use overload::{PlaneLimitLayer, plane_permits};

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::Status;

use crate::openfeature::EvalError;
use crate::service::ServiceError;

/// The one mapping of service errors to gRPC statuses: handlers and conversions return domain
/// errors ([`ServiceError`], or an [`Invalid`](crate::command::Invalid) through it), never a
/// status. Denials never get here: they are data.
impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        match e {
            ServiceError::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
            ServiceError::Unavailable(_) => Status::unavailable(e.to_string()),
            ServiceError::Refused { code, message } => Status::new(code, message),
            ServiceError::RevisionNotReached { .. } => Status::failed_precondition(e.to_string()),
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// OpenFeature's errors as flagd answers them: a missing flag is `NOT_FOUND`, a bad context
/// `INVALID_ARGUMENT`, a type the flag does not have `FAILED_PRECONDITION` (the codes flagd's
/// providers read back as `FLAG_NOT_FOUND`, `INVALID_CONTEXT` and `TYPE_MISMATCH`).
impl From<EvalError> for Status {
    fn from(e: EvalError) -> Status {
        match e {
            EvalError::FlagNotFound(_) => Status::not_found(e.to_string()),
            EvalError::TargetingKeyMissing | EvalError::InvalidContext(_) | EvalError::Parse(_) => {
                Status::invalid_argument(e.to_string())
            }
            EvalError::TypeMismatch(_) => Status::failed_precondition(e.to_string()),
            EvalError::Service(e) => Status::from(e),
        }
    }
}

/// Interceptor: `authorization: Bearer <token>`, compared in constant time against the tokens a
/// plane accepts. Without a configured token the admin plane is closed and the data plane is
/// open (no interceptor at all).
///
/// Who may see what (SPEC §4): the data plane answers decisions and usage; the change feed
/// (`Watch`) and full tenant state (`GetTenantState`) are for relays, with the relay token (or
/// the admin token); people's names and rationale in `Explain` are shown only to those same
/// credentials; billing identities only on the admin plane.
///
/// Authentication happens before a request reaches the service (tonic's interceptors answer
/// with a status), so it is the one place besides the mapping above that builds statuses.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<[Arc<[u8]>]>,
    plane: &'static str,
    closed: &'static str,
}

/// The tokens configured for a server.
#[derive(Clone, Copy, Default)]
pub struct Tokens<'a> {
    pub admin: Option<&'a str>,
    pub data: Option<&'a str>,
    pub relay: Option<&'a str>,
}

impl BearerAuth {
    fn new(tokens: &[Option<&str>], plane: &'static str, closed: &'static str) -> BearerAuth {
        let tokens = tokens.iter().flatten().filter(|t| !t.is_empty()).map(|t| Arc::from(t.as_bytes())).collect();
        BearerAuth { tokens, plane, closed }
    }

    pub fn admin(t: Tokens<'_>) -> BearerAuth {
        BearerAuth::new(&[t.admin], "admin", "the admin plane is disabled: start the server with --admin-token")
    }

    /// `None`: no data token configured, so the data plane is open and needs no interceptor
    /// (converting every request for a no-op check cost ~1 % of a Check, BENCHMARKS.md §1.1).
    /// A relay's or an admin's credential also opens it.
    pub fn data(t: Tokens<'_>) -> Option<BearerAuth> {
        t.data.filter(|d| !d.is_empty())?;
        Some(BearerAuth::new(&[t.data, t.relay, t.admin], "data", ""))
    }

    /// The change feed and full tenant state: the relay token or the admin token.
    pub fn relay(t: Tokens<'_>) -> BearerAuth {
        let closed = "the change feed and tenant state are for relays: start the server with --relay-token";
        BearerAuth::new(&[t.relay, t.admin], "relay", closed)
    }

    pub fn check(&self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.verify(req.metadata()).map(|()| req)
    }

    /// Whether the request carries one of the accepted tokens (for what a credential unlocks
    /// within a method, e.g. names in `Explain`).
    pub fn allows(&self, metadata: &tonic::metadata::MetadataMap) -> bool {
        self.verify(metadata).is_ok()
    }

    pub fn verify(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let presented = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
        self.accept(presented("authorization"), presented("x-api-key"))
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }

    /// The same check for an HTTP request (OFREP: `Authorization: Bearer` or `X-API-Key`).
    pub fn verify_http(&self, headers: &http::HeaderMap) -> Result<(), AuthError> {
        let presented = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        self.accept(presented("authorization"), presented("x-api-key"))
    }

    /// `authorization: Bearer <token>`, else `x-api-key: <token>` (OpenFeature's API-key scheme).
    fn accept(&self, authorization: Option<&str>, api_key: Option<&str>) -> Result<(), AuthError> {
        if self.tokens.is_empty() {
            return Err(AuthError::Closed(self.closed));
        }
        let presented = authorization.and_then(|v| v.strip_prefix("Bearer ")).or(api_key).ok_or(AuthError::Missing)?;
        // Every token is compared, so the time taken does not tell which one came close.
        let matched = self.tokens.iter().fold(0u8, |m, t| m | presented.as_bytes().ct_eq(t).unwrap_u8());
        if matched == 1 { Ok(()) } else { Err(AuthError::Invalid(self.plane)) }
    }
}

/// Why a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Closed(&'static str),
    #[error("missing `authorization: Bearer <token>`")]
    Missing,
    #[error("invalid {0} token")]
    Invalid(&'static str),
}
