//! The notification service: consumes domain events from RabbitMQ, looks up
//! the recipient and their channel preferences, renders a message per event
//! and channel, and sends it by email (SMTP), SMS or push (webhooks). Each
//! event notifies each channel at most once; failures go through the retry
//! tiers to the dead letters, from which an admin can replay them.

mod channels;
pub mod config;
mod consumer;
mod db;
mod error;
mod service;
mod startup;
mod templates;

pub use config::NotificationConfig;
pub use startup::Application;
