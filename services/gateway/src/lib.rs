//! The REST gateway, GoCommerce's one entry point: it validates requests,
//! verifies access tokens against the auth service's JWKS (refusing those
//! of sessions that have ended), rate-limits,
//! translates REST to gRPC with a deadline on every call, answers errors as
//! `application/problem+json`, and serves its own OpenAPI document.

mod authn;
mod backend;
pub mod config;
mod extract;
mod json;
mod openapi;
mod problem;
mod ratelimit;
mod routes;
mod sessions;
mod startup;

pub use config::GatewayConfig;
pub use openapi::ApiDoc;
pub use startup::Application;
