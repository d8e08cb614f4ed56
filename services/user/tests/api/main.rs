//! Integration tests of the user service over gRPC, against the real
//! PostgreSQL on this machine.

mod addresses;
mod admin;
mod contact;
mod helpers;
mod preferences;
mod profiles;
