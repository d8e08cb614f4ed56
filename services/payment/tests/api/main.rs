//! Integration tests of the payment service over gRPC, against the real
//! PostgreSQL and RabbitMQ on this machine.

mod charges;
mod helpers;
mod migrations;
mod refunds;
