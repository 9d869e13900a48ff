//! ofctl: a declarative reconcile engine for the OpenFrame control plane.
//!
//! manifest (YAML) ──load──▶ desired ─┐
//!                                     ├─▶ plan (diff, classify, order) ──▶ apply ──▶ live systems
//! live systems ──provider.read──▶ observed ─┘

pub mod apply;
pub mod cli;
pub mod config;
pub mod duration;
pub mod engine;
pub mod export;
pub mod interpolate;
pub mod jobs;
pub mod json;
pub mod kind;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod path;
pub mod plan;
pub mod provider;
pub mod providers;
pub mod redact;
pub mod registry;
pub mod resource;
pub mod sandbox;
pub mod shared;
pub mod watch;
