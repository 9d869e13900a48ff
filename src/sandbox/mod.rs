//! `ofctl sandbox`: in-process HTTP emulators of the three control-plane APIs the engine drives.
//!
//! * [`pinot`] — Apache Pinot controller, release 1.5.1 (apis.md §1)
//! * [`connect`] — Kafka Connect 3.9 with the Debezium source connectors (apis.md §2)
//! * [`tactical`] — Tactical RMM scripts API, TRMM 1.5.1 / DRF 3.15 (apis.md §3)
//!
//! They reproduce paths, status codes, error envelopes, server-added defaults and rejections, so
//! the engine's diff/retry logic can be tested and benchmarked without the real systems. Faults
//! ([`FaultConfig`]) and test-only admin endpoints under `/__sandbox/` are layered on top.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod connect;
pub mod faults;
pub mod pinot;
pub mod tactical;
#[cfg(test)]
mod tests;

pub use faults::{FaultConfig, RequestStats, StatsSnapshot, System, SystemStats};

use faults::{ConnHandle, Injector, KillableListener};

/// Where to listen and how to misbehave. Port 0 picks a free port.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub pinot: SocketAddr,
    pub connect: SocketAddr,
    pub tactical: SocketAddr,
    /// The only `X-API-KEY` the Tactical emulator accepts.
    pub tactical_api_key: String,
    pub faults: FaultConfig,
}

impl Default for SandboxOptions {
    /// Loopback on free ports, no faults.
    fn default() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            pinot: any,
            connect: any,
            tactical: any,
            tactical_api_key: "sandbox-api-key".to_owned(),
            faults: FaultConfig::default(),
        }
    }
}

/// Running emulators. Dropping it aborts the servers; [`Sandbox::shutdown`] stops them gracefully.
pub struct Sandbox {
    pub pinot_url: String,
    pub connect_url: String,
    pub tactical_url: String,
    pub stats: Arc<RequestStats>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

/// Binds all three listeners, then serves them on the current Tokio runtime.
pub async fn start(opts: SandboxOptions) -> Result<Sandbox, io::Error> {
    let stats = Arc::new(RequestStats::default());
    let injector = Injector::new(opts.faults, stats.clone())?;

    let pinot_listener = TcpListener::bind(opts.pinot).await?;
    let connect_listener = TcpListener::bind(opts.connect).await?;
    let tactical_listener = TcpListener::bind(opts.tactical).await?;
    let (pinot_addr, connect_addr, tactical_addr) = (
        pinot_listener.local_addr()?,
        connect_listener.local_addr()?,
        tactical_listener.local_addr()?,
    );

    let connect_state = connect::ConnectState::new(connect_addr.to_string());
    let admin = faults::admin_router(stats.clone());
    let servers = [
        (
            pinot_listener,
            injector.apply(System::Pinot, pinot::router(pinot::PinotState::default())),
        ),
        (
            connect_listener,
            injector
                .apply(System::Connect, connect::router(connect_state.clone()))
                .merge(connect::admin_router(connect_state)),
        ),
        (
            tactical_listener,
            injector.apply(
                System::Tactical,
                tactical::router(tactical::TacticalState::new(opts.tactical_api_key)),
            ),
        ),
    ];

    let (shutdown, signal) = watch::channel(false);
    let tasks = servers
        .into_iter()
        .map(|(listener, router)| {
            let app = router
                .merge(admin.clone())
                .into_make_service_with_connect_info::<ConnHandle>();
            let mut signal = signal.clone();
            tokio::spawn(async move {
                axum::serve(KillableListener(listener), app)
                    .with_graceful_shutdown(async move {
                        let _ = signal.wait_for(|stop| *stop).await;
                    })
                    .await
            })
        })
        .collect();

    Ok(Sandbox {
        pinot_url: format!("http://{pinot_addr}"),
        connect_url: format!("http://{connect_addr}"),
        tactical_url: format!("http://{tactical_addr}"),
        stats,
        shutdown,
        tasks,
    })
}

impl Sandbox {
    /// Stops accepting, lets in-flight requests finish (at most 5 s), then returns.
    pub async fn shutdown(mut self) -> io::Result<()> {
        let _ = self.shutdown.send(true);
        let mut result = Ok(());
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Err(e))) if result.is_ok() => result = Err(e),
                Ok(Err(join)) if result.is_ok() => result = Err(io::Error::other(join)),
                Err(_elapsed) => abort.abort(),
                _ => {}
            }
        }
        result
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `a=1&b=2&a=3` → ordered pairs with `+` and `%XX` decoded (repeated keys matter for Connect's
/// `expand`, which axum's `Query` cannot express).
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
