//! Fault injection and request accounting shared by the three emulators.
//!
//! Faults are applied by an axum middleware wrapped around each emulator's API routes; the
//! `/__sandbox/` admin routes are merged in outside that layer, so they are never faulted or counted.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Faults injected into every non-admin request. All rates are probabilities in `0.0..=1.0`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Added before every request is handled.
    pub latency: Duration,
    /// Probability of a 500 in the emulated system's own error format.
    pub error_rate: f64,
    /// Probability that a Kafka Connect forwarded write gets the 409 rebalance answer (apis.md §2.5).
    pub rebalance_rate: f64,
    /// Probability that the connection is closed without any response. Half of these drops
    /// happen after the request was handled: a write is then made but its answer is lost, the
    /// case in which a client that blindly retries a create makes a duplicate.
    pub drop_rate: f64,
    /// Seed for reproducible fault sequences (per process; concurrency still interleaves draws).
    pub seed: Option<u64>,
    /// Fault only writes (every method but GET and HEAD); reads are always answered. For tests
    /// of what retried writes do, which would otherwise mostly see their reads fail.
    pub writes_only: bool,
}

impl FaultConfig {
    pub fn validate(&self) -> io::Result<()> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("rebalance_rate", self.rebalance_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fault {name} must be within 0..=1, got {rate}"),
                ));
            }
        }
        Ok(())
    }
}

/// The emulated system a request was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Pinot,
    Connect,
    Tactical,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    faults: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SystemStats {
        SystemStats {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for c in [&self.reads, &self.writes, &self.faults] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Per-system request counters: reads are GET/HEAD, writes are every other method.
#[derive(Debug, Default)]
pub struct RequestStats {
    pinot: Counters,
    connect: Counters,
    tactical: Counters,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SystemStats {
    pub reads: u64,
    pub writes: u64,
    /// Requests that got an injected fault (they are also counted as reads/writes).
    pub faults: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub pinot: SystemStats,
    pub connect: SystemStats,
    pub tactical: SystemStats,
}

impl RequestStats {
    fn counters(&self, system: System) -> &Counters {
        match system {
            System::Pinot => &self.pinot,
            System::Connect => &self.connect,
            System::Tactical => &self.tactical,
        }
    }

    pub fn record(&self, system: System, method: &Method) {
        let c = self.counters(system);
        let counter = if method == Method::GET || method == Method::HEAD {
            &c.reads
        } else {
            &c.writes
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn record_fault(&self, system: System) {
        self.counters(system).faults.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            pinot: self.pinot.snapshot(),
            connect: self.connect.snapshot(),
            tactical: self.tactical.snapshot(),
        }
    }

    pub fn reset(&self) {
        self.pinot.reset();
        self.connect.reset();
        self.tactical.reset();
    }
}

/// Shared fault state: one RNG for all three servers so a seed fixes the whole sequence.
#[derive(Clone)]
pub(crate) struct Injector {
    cfg: Arc<FaultConfig>,
    rng: Arc<Mutex<StdRng>>,
    stats: Arc<RequestStats>,
}

enum Fault {
    /// `handled`: the request reaches the emulator first, so only the answer is lost.
    Drop {
        handled: bool,
    },
    Error,
    Rebalance,
}

impl Injector {
    pub(crate) fn new(cfg: FaultConfig, stats: Arc<RequestStats>) -> io::Result<Self> {
        cfg.validate()?;
        let rng = cfg
            .seed
            .map_or_else(StdRng::from_entropy, StdRng::seed_from_u64);
        Ok(Self {
            cfg: Arc::new(cfg),
            rng: Arc::new(Mutex::new(rng)),
            stats,
        })
    }

    fn roll(&self, system: System, method: &Method, path: &str) -> Option<Fault> {
        let cfg = &self.cfg;
        if cfg.drop_rate == 0.0 && cfg.error_rate == 0.0 && cfg.rebalance_rate == 0.0 {
            return None;
        }
        if cfg.writes_only && (method == Method::GET || method == Method::HEAD) {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.gen_bool(cfg.drop_rate) {
            Some(Fault::Drop {
                handled: rng.gen_bool(0.5),
            })
        } else if rng.gen_bool(cfg.error_rate) {
            Some(Fault::Error)
        } else if system == System::Connect
            && super::connect::is_forwarded_write(method, path)
            && rng.gen_bool(cfg.rebalance_rate)
        {
            Some(Fault::Rebalance)
        } else {
            None
        }
    }

    /// Wraps an emulator's API routes with accounting, latency and faults.
    pub(crate) fn apply(&self, system: System, api: Router) -> Router {
        api.layer(axum::middleware::from_fn_with_state(
            (system, self.clone()),
            fault_layer,
        ))
    }
}

async fn fault_layer(
    State((system, inj)): State<(System, Injector)>,
    req: Request,
    next: Next,
) -> Response {
    inj.stats.record(system, req.method());
    if !inj.cfg.latency.is_zero() {
        tokio::time::sleep(inj.cfg.latency).await;
    }
    let Some(fault) = inj.roll(system, req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    inj.stats.record_fault(system);
    match fault {
        Fault::Drop { handled } => match req.extensions().get::<ConnectInfo<ConnHandle>>() {
            // The response below is never written: the socket refuses all further I/O, so hyper
            // tears the connection down and the client sees it closed mid-request.
            Some(ConnectInfo(conn)) => {
                let conn = conn.clone();
                let response = if handled {
                    next.run(req).await
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                };
                conn.kill();
                response
            }
            // Router served without `KillableListener` (e.g. in a unit test): nearest substitute.
            None => internal_error(system),
        },
        Fault::Error => internal_error(system),
        Fault::Rebalance => super::connect::rebalance_conflict(),
    }
}

/// A 500 the way each system renders unexpected server errors.
fn internal_error(system: System) -> Response {
    match system {
        // apis.md §1.1: WebApplicationExceptionMapper envelope.
        System::Pinot => super::pinot::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "java.lang.RuntimeException: sandbox injected fault",
        ),
        // apis.md §2.5: the transient 500 clients are told to retry.
        System::Connect => {
            super::connect::error(StatusCode::INTERNAL_SERVER_ERROR, "Request timed out")
                .into_response()
        }
        // Django with DEBUG=False renders its stock HTML page for unhandled exceptions.
        System::Tactical => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html>\n<html lang=\"en\">\n<head>\n  <title>Server Error (500)</title>\n</head>\n<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n",
        )
            .into_response(),
    }
}

/// `GET /__sandbox/stats` and `POST /__sandbox/stats/reset`, mounted on every server.
pub(crate) fn admin_router(stats: Arc<RequestStats>) -> Router {
    Router::new()
        .route(
            "/__sandbox/stats",
            get(|State(s): State<Arc<RequestStats>>| async move { Json(s.snapshot()) }),
        )
        .route(
            "/__sandbox/stats/reset",
            post(|State(s): State<Arc<RequestStats>>| async move {
                s.reset();
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(stats)
}

/// Per-connection switch that makes the socket fail all further I/O (used for `drop_rate`).
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle(Arc<AtomicBool>);

impl ConnHandle {
    fn kill(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// TCP listener whose connections can be killed from inside a request handler.
pub(crate) struct KillableListener(pub(crate) TcpListener);

pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::Relaxed) {
            Err(io::ErrorKind::ConnectionAborted.into())
        } else {
            Ok(())
        }
    }
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    // Small JSON exchanges: Nagle would add ~40 ms per request in benchmarks.
                    let _ = inner.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    return (KillableStream { inner, killed }, addr);
                }
                // Transient (EMFILE, aborted handshakes): back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<axum::serve::IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: axum::serve::IncomingStream<'_, KillableListener>) -> Self {
        ConnHandle(stream.io().killed.clone())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
