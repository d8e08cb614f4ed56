//! The GoCommerce user service: profiles, preferences and addresses. A
//! profile mirrors an auth account (same id and email, a copy of its role
//! and disabled status) and carries the user's notification preferences and
//! address book.

mod access;
pub mod config;
mod country;
mod db;
mod domain;
mod error;
mod service;
mod startup;

pub use config::UserConfig;
pub use startup::Application;
