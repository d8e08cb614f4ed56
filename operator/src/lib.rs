//! The GoCommerce operator: runs a whole GoCommerce installation on
//! Kubernetes from one `GoCommerce` custom resource.

pub mod build;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod meta;
pub mod metrics;
pub mod render;
pub mod run;
pub mod secrets;
pub mod status;
pub mod telemetry;
pub mod topology;
pub mod uninstall;
pub mod validate;

#[cfg(test)]
mod testing;
