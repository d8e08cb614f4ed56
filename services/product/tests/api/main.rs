//! Integration tests of the product service over gRPC, against the real
//! PostgreSQL on this machine.

mod cache;
mod categories;
mod helpers;
mod import;
mod inventory;
mod products;
mod reads;
mod search;
