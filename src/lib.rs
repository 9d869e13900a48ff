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
pub mod jobs;
pub mod kind;
pub mod manifest;
pub mod path;
pub mod plan;
pub mod providers;
pub mod redact;
pub mod resource;
pub mod sandbox;
pub mod watch;
