//! glance-gateway: the OpenStack Glance v1 image API over a sled registry and file, S3 and Swift
//! stores.

pub mod access;
pub mod admin;
pub mod admin_cli;
pub mod admin_ops;
pub mod catalog;
pub mod checks;
pub mod config;
pub mod error;
mod framing;
pub mod http;
pub mod listing;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod protection;
pub mod registry;
pub mod remote;
pub mod server;
pub mod state;
pub mod upload;

pub use http::router;
pub use server::{open_state, serve, serve_admin};
