//! gRPC (SPEC §4): the two tonic services, the conversions between core types and protobuf
//! ([`convert`]), and — in one place — the mapping of errors to gRPC statuses.

mod admin;
pub mod convert;
mod data;

pub use admin::AdminApi;
pub use data::DataApi;

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::Status;

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
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// Interceptor: `authorization: Bearer <token>`, compared in constant time. Without a configured
/// token the admin plane is closed and the data plane is open (no interceptor at all).
///
/// Authentication happens before a request reaches the service (tonic's interceptors answer
/// with a status), so it is the one place besides the mapping above that builds statuses.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<Arc<[u8]>>,
    plane: &'static str,
}

impl BearerAuth {
    pub fn admin(token: Option<&str>) -> BearerAuth {
        BearerAuth { token: Self::bytes(token), plane: "admin" }
    }

    /// `None`: no data token configured, so the data plane is open and needs no interceptor
    /// (converting every request for a no-op check cost ~1 % of a Check, BENCHMARKS.md §1.1).
    pub fn data(token: Option<&str>) -> Option<BearerAuth> {
        Self::bytes(token).map(|token| BearerAuth { token: Some(token), plane: "data" })
    }

    fn bytes(token: Option<&str>) -> Option<Arc<[u8]>> {
        token.filter(|t| !t.is_empty()).map(|t| Arc::from(t.as_bytes()))
    }

    pub fn check(&self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Err(Status::unauthenticated("the admin plane is disabled: start the server with --admin-token"));
        };
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        if bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(format!("invalid {} token", self.plane)))
        }
    }
}
