//! One module per live system, each a plug-in behind the provider API (the `provider` module).
//! The `registry` module is the only one that names them all.

pub mod connect;
pub mod kafka;
pub mod mongo;
pub mod nats;
pub mod pinot;
pub mod tactical;
