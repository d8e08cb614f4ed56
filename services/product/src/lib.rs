//! The GoCommerce product service: the category tree, products with ranked
//! full-text search and keyset pagination, bulk import, and the inventory
//! (stock, a ledger of movements, all-or-nothing reservations for orders).

mod cache;
pub mod config;
mod convert;
mod db;
mod error;
mod import;
mod input;
mod search;
mod service;
mod startup;

pub use config::ProductConfig;
pub use startup::Application;
