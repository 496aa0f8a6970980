//! crs-backup-exporter: the backups of Tencent Cloud Redis (CRS) instances,
//! polled from the API within its rate limit and served to Prometheus.
//!
//! A map of the crate, in the order data flows:
//!
//! - [`config`] reads the YAML file and the environment, and checks them;
//! - [`credentials`] finds the API key and keeps it out of every output;
//! - [`temporary`] renews credentials that expire (instance role, web identity);
//! - [`accounts`] keeps a client per account and discovers instances;
//! - [`signing`] computes TC3-HMAC-SHA256;
//! - [`ratelimit`] keeps the per-second request budget, counted by arrival;
//! - [`client`] sends signed, budgeted, retried requests and reads pages;
//! - [`answer`] reads the API's answers, leniently;
//! - [`backup`] sorts backups into status buckets and sums them up;
//! - [`failure`] names why a poll failed, from a bounded set of reasons;
//! - [`scheduler`] runs poll cycles over every instance;
//! - [`shard`] splits instances and budget between replicas;
//! - [`snapshot`] keeps what the latest polls found;
//! - [`metrics`] turns the snapshot into Prometheus metrics;
//! - [`server`] serves `/metrics` and the health endpoints;
//! - [`webconfig`] reads TLS and basic auth settings, and watches them;
//! - [`app`] wires the parts together;
//! - [`simulator`] and [`demo`] stand in for the API on 127.0.0.1.

pub mod accounts;
pub mod answer;
pub mod app;
pub mod backup;
pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod failure;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod scheduler;
pub mod server;
pub mod shard;
pub mod signing;
pub mod simulator;
pub mod snapshot;
pub mod temporary;
pub mod webconfig;
