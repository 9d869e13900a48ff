//! The JSON-over-HTTP plumbing the REST providers (Pinot, Kafka Connect, Tactical RMM) share:
//! one client per system with timeouts, a limit on requests in flight, request counting and
//! error mapping. The connection pool underneath is the process's one per trust setting
//! ([`crate::shared`]): a thousand tenants' providers reach the same servers over the same
//! keep-alive connections, and TLS roots are loaded once, not per tenant and system.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{Answer, ProviderError, ReadPass, RequestCount, RequestCounter};
use crate::config::{ConfigError, TargetConfig};
use crate::kind::System;
use crate::redact::redact;

/// Trust for the HTTPS systems on top of the built-in roots: the CA certificates of
/// `[tls] ca_file` in the target config.
#[derive(Clone, Default)]
pub struct Tls {
    roots: Vec<reqwest::Certificate>,
    /// Digest of the CA bundle (empty without one): clients with equal trust share a pool.
    digest: String,
}

impl Tls {
    /// The CAs `[tls] ca_file` names (none when it is not set).
    pub fn from_config(config: &TargetConfig) -> Result<Self, ConfigError> {
        let Some(path) = config.tls_ca_file() else {
            return Ok(Self::default());
        };
        let error = |message: String| ConfigError::Value {
            path: config.path.clone().unwrap_or_default(),
            key: "tls.ca_file".into(),
            message,
        };
        let pem = std::fs::read(&path)
            .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            error(format!(
                "{} is not a PEM certificate bundle: {e}",
                path.display()
            ))
        })?;
        if roots.is_empty() {
            return Err(error(format!(
                "{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`); give the CA that signed the systems' certificates",
                path.display()
            )));
        }
        Ok(Self {
            roots,
            digest: crate::json::digest(&Value::String(String::from_utf8_lossy(&pem).into())),
        })
    }
}

pub struct HttpClient {
    system: System,
    base: String,
    client: std::sync::Arc<reqwest::Client>,
    /// Sent with every request (an API key): per provider, as the pool is shared.
    headers: HeaderMap,
    counter: RequestCounter,
    /// Requests in flight to this system, whichever kind or operation sends them: the
    /// `[engine] concurrency` of the target config.
    in_flight: Semaphore,
    concurrency: usize,
}

/// A response of any status; providers decide what each status means for their API.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The answer with its body parsed (for a status's error message).
    pub fn response(&self) -> Response {
        Response {
            status: self.status,
            body: self.json(),
        }
    }
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error text of the usual envelopes: Pinot `error`, Connect `message`, DRF `detail`,
    /// a bare JSON string, or the whole body.
    pub fn message(&self) -> String {
        match &self.body {
            Value::String(s) => s.clone(),
            Value::Object(map) => ["error", "message", "detail"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| self.body.to_string()),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

impl HttpClient {
    /// A client sending at most `concurrency` (at least 1) requests at a time. It never
    /// follows a redirect: one to another host would carry the API key or credentials there.
    pub fn new(
        system: System,
        base: &str,
        headers: &[(&'static str, String)],
        concurrency: usize,
        tls: &Tls,
    ) -> Result<Self, ProviderError> {
        let concurrency = concurrency.max(1);
        let mut map = HeaderMap::new();
        map.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                ProviderError::permanent(format!("{system}: header {name} has an invalid value"))
            })?;
            v.set_sensitive(true);
            map.insert(HeaderName::from_static(name), v);
        }
        let client = crate::shared::get_or_make(&format!("http#{}", tls.digest), || {
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30));
            for root in &tls.roots {
                builder = builder.add_root_certificate(root.clone());
            }
            builder.build().map_err(|e| {
                ProviderError::permanent(format!("{system}: cannot build HTTP client: {e}"))
            })
        })?;
        Ok(Self {
            system,
            base: base.trim_end_matches('/').to_string(),
            client,
            headers: map,
            counter: RequestCounter::default(),
            in_flight: Semaphore::new(concurrency),
            concurrency,
        })
    }

    /// How many requests may be in flight at once: providers fan reads out this wide.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn requests(&self) -> RequestCount {
        self.counter.snapshot()
    }

    /// Sends one request. Only transport failures are errors here (and transient: the
    /// server was unreachable or the connection dropped); every HTTP status is returned.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ProviderError> {
        Ok(self.send_for_answer(method, path, body).await?.response())
    }

    /// [`Self::send`] of a body-less request, the answer's body left as sent.
    pub async fn answer(&self, method: Method, path: &str) -> Result<Answer, ProviderError> {
        self.send_for_answer(method, path, None).await
    }

    /// [`Self::send`], the body left as sent.
    async fn send_for_answer(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        // Never closed, so acquiring only waits for a free slot.
        let _permit = self.in_flight.acquire().await.ok();
        if method == Method::GET {
            self.counter.read();
        } else {
            self.counter.write();
        }
        let url = format!("{}{}", self.base, path);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .headers(self.headers.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        // A write that reached the server but got no answer may still have been carried out.
        let failed = |sent: bool, message: String| {
            if sent && method != Method::GET {
                ProviderError::unanswered(message)
            } else {
                ProviderError::transient(message)
            }
        };
        let response = request.send().await.map_err(|e| {
            let what = if e.is_connect() {
                "cannot connect"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            // The causes say why (refused, a certificate the client does not trust, ...).
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                detail.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            if detail.to_ascii_lowercase().contains("certificate") {
                detail.push_str(
                    "; if a private CA signed the server's certificate, name it in `[tls] ca_file` of the target config",
                );
            }
            failed(
                !e.is_connect(),
                format!("{} {method} {}: {what}: {detail}", self.system, redact(&url)),
            )
        })?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                .unwrap_or_else(|| "(no Location header)".into());
            return Err(ProviderError::permanent(format!(
                "{} {method} {}: the server redirected ({status}) to {}; ofctl does not follow redirects (one could carry the API key or credentials to another host): set `[{}] url` in the target config to the address that answers",
                self.system,
                redact(&url),
                redact(&location),
                self.system
            )));
        }
        let bytes = response.bytes().await.map_err(|e| {
            failed(
                true,
                format!(
                    "{} {method} {}: response cut off: {e}",
                    self.system,
                    redact(&url)
                ),
            )
        })?;
        Ok(Answer {
            status,
            body: bytes,
        })
    }

    /// A GET of a read, sent once per read pass: `answer` turns the response into what the
    /// read needs, or into an error. An answer is kept for the rest of the pass, an error is
    /// not, so when the engine retries a read that failed on one of its requests, the retry
    /// sends only the requests that have no answer yet. (A read of 8 requests, each failing
    /// 30 % of the time, otherwise needs all 8 to succeed in one attempt: 6 % of attempts do.)
    pub async fn get_in<T, F>(
        &self,
        pass: &ReadPass,
        path: &str,
        answer: F,
    ) -> Result<std::sync::Arc<T>, ProviderError>
    where
        T: Send + Sync + 'static,
        F: FnOnce(Response) -> Result<T, ProviderError>,
    {
        let key = format!("{} GET {path}", self.system);
        pass.once(&key, || async {
            answer(self.send(Method::GET, path, None).await?)
        })
        .await
    }

    /// A GET of a fetch, sent once per read pass as in [`Self::get_in`], its answer kept as
    /// sent: `accept` says whether its status is an answer (e.g. 200 or 404) or an error.
    pub async fn answer_in<F>(
        &self,
        pass: &ReadPass,
        path: &str,
        accept: F,
    ) -> Result<Answer, ProviderError>
    where
        F: FnOnce(&Answer) -> Result<(), ProviderError>,
    {
        let key = format!("{} GET {path}", self.system);
        let answer = pass
            .once(&key, || async {
                let answer = self.send_for_answer(Method::GET, path, None).await?;
                accept(&answer).map(|()| answer)
            })
            .await?;
        Ok(Answer::clone(&answer))
    }

    /// Runs `reads` (made of [`Self::get_in`] GETs), as many at a time as the concurrency
    /// limit allows, and waits for all of them even after one failed: the answers of the others
    /// are then kept in the pass for the retry. (`try_join_all` or `try_collect` would drop the
    /// requests in flight, and with them answers already on their way.) The first error wins.
    pub async fn read_each<T, Fut>(
        &self,
        reads: impl IntoIterator<Item = Fut>,
    ) -> Result<Vec<T>, ProviderError>
    where
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        use futures::StreamExt;
        let results: Vec<Result<T, ProviderError>> = futures::stream::iter(reads)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// An error for an unexpected status, transient for 5xx and 429 unless told otherwise.
    pub fn status_error(&self, method: &Method, path: &str, response: &Response) -> ProviderError {
        let message = format!(
            "{} {method} {path} returned {}: {}",
            self.system,
            response.status,
            response.message()
        );
        if response.status >= 500 || response.status == 429 {
            ProviderError::transient(message)
        } else {
            ProviderError::permanent(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Requests in flight now and at most, as the server saw them.
    #[derive(Default)]
    struct InFlight {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    #[tokio::test]
    async fn at_most_concurrency_requests_are_in_flight() {
        let seen = Arc::new(InFlight::default());
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(
                    |axum::extract::State(s): axum::extract::State<Arc<InFlight>>| async move {
                        let now = s.now.fetch_add(1, Ordering::SeqCst) + 1;
                        s.max.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        s.now.fetch_sub(1, Ordering::SeqCst);
                        "{}"
                    },
                ),
            )
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = HttpClient::new(System::Pinot, &url, &[], 3, &Tls::default()).unwrap();
        assert_eq!(client.concurrency(), 3);
        let responses =
            futures::future::join_all((0..12).map(|_| client.send(Method::GET, "/slow", None)))
                .await;
        assert!(responses.iter().all(|r| r.as_ref().unwrap().status == 200));
        assert_eq!(seen.max.load(Ordering::SeqCst), 3);
        assert_eq!(client.requests().reads, 12);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let elsewhere = Arc::new(AtomicUsize::new(0));
        let target = axum::Router::new()
            .fallback(
                |axum::extract::State(n): axum::extract::State<Arc<AtomicUsize>>| async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    "{}"
                },
            )
            .with_state(Arc::clone(&elsewhere));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_url = format!(
            "http://localhost:{}/steal",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move { axum::serve(listener, target).await });
        let location = target_url.clone();
        let app = axum::Router::new().fallback(move || {
            let location = location.clone();
            async move { axum::response::Redirect::temporary(&location) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let headers = [("x-api-key", "k-not-for-elsewhere".to_string())];
        let client = HttpClient::new(System::Tactical, &url, &headers, 1, &Tls::default()).unwrap();
        for method in [Method::GET, Method::POST] {
            let err = client.send(method, "/scripts/", None).await.unwrap_err();
            assert!(
                err.message
                    .contains(&format!("redirected (307) to {target_url}")),
                "{}",
                err.message
            );
            assert!(
                err.message.contains("does not follow redirects"),
                "{}",
                err.message
            );
            assert!(err.message.contains("`[tactical] url`"), "{}", err.message);
        }
        assert_eq!(elsewhere.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let config = TargetConfig::parse(
            "[tls]\nca_file = \"ca.pem\"\n",
            &dir.path().join("ofctl.toml"),
        )
        .unwrap();
        let err = Tls::from_config(&config).err().unwrap().to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("no PEM certificate"),
            "{err}"
        );
        let missing = TargetConfig::parse(
            "[tls]\nca_file = \"nope.pem\"\n",
            &dir.path().join("ofctl.toml"),
        )
        .unwrap();
        let err = Tls::from_config(&missing).err().unwrap().to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("nope.pem"),
            "{err}"
        );
    }
}
