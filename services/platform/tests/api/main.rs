//! Integration tests of the platform's messaging and gRPC client against the
//! real RabbitMQ and PostgreSQL on this machine and servers on loopback.

mod broker;
mod grpc_channel;
mod helpers;
mod outbox;
mod pipeline;
mod pool;
mod resilience;
mod row;
mod startup;
