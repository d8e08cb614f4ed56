//! Integration tests of the whole platform through its public interfaces,
//! against the real PostgreSQL on this machine.

mod accounts;
mod auth;
mod catalog;
mod e2e;
mod gateway;
mod helpers;
mod mailbox;
mod notifications;
mod orders;
mod passwords;
mod platform;
mod process;
mod retention;
mod sessions;
mod tokens;
mod users;
