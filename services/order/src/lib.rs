//! The order service: places orders through a saga across the product and
//! payment services, keeps the order state machine and its history, answers
//! repeated requests by idempotency key, and streams status changes live.

pub mod config;
mod convert;
mod db;
mod domain;
mod error;
mod saga;
mod service;
mod startup;
mod watch;

pub use config::OrderConfig;
pub use startup::Application;
