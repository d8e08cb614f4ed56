//! The runtime every GoCommerce service shares: configuration from the
//! environment, logging and traces, Prometheus metrics, health and readiness,
//! graceful shutdown, the PostgreSQL pool, gRPC server and client plumbing, and
//! the one error-code type that maps to both gRPC and HTTP.

pub mod admin;
pub mod broker;
pub mod caller;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod expiring;
pub mod grpc;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod page;
pub mod pipeline;
pub mod readiness;
pub mod row;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod token;
pub mod validate;

pub use caller::{Caller, Role};
pub use error::ErrorCode;
pub use readiness::Readiness;
pub use shutdown::Shutdown;
