//! The auth service: accounts, Argon2id passwords, EdDSA-signed access tokens
//! with a published JWKS, single-use rotating refresh tokens with family
//! revocation, roles, the bootstrap admin and login throttling.

pub mod config;
mod db;
mod domain;
mod error;
mod keys;
mod lifetimes;
mod mirror;
mod password;
mod profiles;
pub mod retention;
mod service;
mod startup;
mod throttle;

pub use config::AuthConfig;
pub use startup::Application;
