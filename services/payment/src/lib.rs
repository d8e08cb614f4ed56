//! The payment service: charges against a simulated processor, exactly once
//! per order; refunds recorded at once and processed asynchronously through
//! RabbitMQ; every outcome published as an event through the outbox.

pub mod config;
mod db;
mod domain;
mod error;
mod processor;
mod refunds;
mod service;
mod startup;

pub use config::PaymentConfig;
pub use startup::Application;
