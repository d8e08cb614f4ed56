//! Integration tests of the platform's messaging against the real RabbitMQ
//! and PostgreSQL on this machine.

mod broker;
mod helpers;
mod outbox;
mod pool;
mod resilience;
