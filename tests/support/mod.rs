//! Test harness: real servers on free loopback ports, and the real `ofctl` binary.
//!
//! Servers come from `scripts/dev-stack.sh install` (into `.tools/bin`), or from PATH. A test
//! that needs a server and cannot find it fails with the command that installs it: skipping
//! would let a machine without servers pass a suite that tested nothing.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$OFCTL_TOOLS_DIR`, else `<repo>/.tools` (where `scripts/dev-stack.sh install` puts things).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("OFCTL_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools"))
}

/// Path of a server binary: `$OFCTL_TOOLS_DIR/bin`, `.tools/bin`, then PATH.
pub fn tool(name: &str) -> PathBuf {
    let local = tools_dir().join("bin").join(name);
    if local.exists() {
        return local;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("`{name}` not found in .tools/bin or PATH: run `scripts/dev-stack.sh install` first");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited with {status} before listening:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 30 s");
}

/// A plain HTTP/1.0 GET on loopback; true on status 200.
fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}

/// A server process that is killed (and its data removed) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Server {
    fn start(what: &str, mut cmd: Command, port: u16, dir: tempfile::TempDir) -> Server {
        let log = dir.path().join("server.log");
        let file = std::fs::File::create(&log).expect("create server log");
        let err = file.try_clone().expect("clone log handle");
        let mut child = cmd
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        wait_for_port(port, &mut child, what, &log);
        Server { child, port, dir }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server as an operator would (SIGTERM: it shuts down cleanly), killing it if
    /// it has not exited within 20 s.
    pub fn terminate(&mut self) {
        if sigterm(&mut self.child).is_none() {
            self.stop();
        }
    }
}

/// Sends SIGTERM and waits (up to 20 s) for the process to exit; `None` if it has not.
fn sigterm(child: &mut Child) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nats-server with JetStream, storing in a temporary folder.
pub fn nats() -> (Server, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("js");
    let server = nats_server(dir, &store, free_port(), &[]);
    let url = format!("nats://127.0.0.1:{}", server.port);
    (server, url)
}

/// nats-server with JetStream on `port`, storing in `store` (a restart on the same store finds
/// its streams again), with `extra` arguments such as `--user`/`--pass`; its log goes into `dir`.
pub fn nats_server(dir: tempfile::TempDir, store: &Path, port: u16, extra: &[&str]) -> Server {
    let monitor = free_port();
    let mut cmd = Command::new(tool("nats-server"));
    cmd.args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        &monitor.to_string(),
        "-js",
    ])
    .args(extra)
    .arg("-sd")
    .arg(store);
    let server = Server::start("nats-server", cmd, port, dir);
    // The client port opens before JetStream is ready; wait for the server to say it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_ok(monitor, "/healthz?js-enabled-only=true") {
        assert!(Instant::now() < deadline, "JetStream not ready within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// SecantusDB (a MongoDB wire-protocol server) in memory; the URI names database `openframe`.
pub fn mongo() -> (Server, String) {
    let port = free_port();
    let server = secantus(":memory:", port, &[]);
    (
        server,
        format!("mongodb://127.0.0.1:{port}/openframe?directConnection=true"),
    )
}

/// SecantusDB on `port` storing in `storage` (a folder survives a restart; `:memory:` does
/// not), with `extra` flags such as `--auth`.
pub fn secantus(storage: impl AsRef<std::ffi::OsStr>, port: u16, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(tool("secantusd-py"));
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--storage-path")
        .arg(storage)
        .args(extra);
    Server::start("secantusd-py", cmd, port, dir)
}

/// The Python of the tools venv (with `cryptography`, from `scripts/dev-stack.sh install`).
pub fn python() -> PathBuf {
    let p = tools_dir().join("venv").join("bin").join("python");
    assert!(
        p.exists(),
        "{} not found: run `scripts/dev-stack.sh install` first",
        p.display()
    );
    p
}

/// Decrypts a registration secret like the platform (AES-256-CBC, key from PBKDF2-HMAC-SHA1
/// over the encryption password and salt, 1024 rounds, openframe.md §12), with Python's
/// `cryptography` (an independent implementation).
pub fn decrypt_with_python(ciphertext: &str, password: &str, salt: &str) -> String {
    let script = r#"
import sys
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
ct, password, salt = sys.argv[1], sys.argv[2], sys.argv[3]
key = PBKDF2HMAC(algorithm=hashes.SHA1(), length=32, salt=bytes.fromhex(salt), iterations=1024).derive(password.encode())
raw = bytes.fromhex(ct)
d = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
padded = d.update(raw[16:]) + d.finalize()
u = padding.PKCS7(128).unpadder()
sys.stdout.write((u.update(padded) + u.finalize()).decode())
"#;
    let out = Command::new(python())
        .args(["-c", script, ciphertext, password, salt])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python decrypt failed (is `cryptography` installed? scripts/dev-stack.sh install): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// noida-db speaking the Kafka protocol, storing in a temporary folder. The native binary is
/// started directly (scripts/dev-stack.sh links it): the pip wrapper would leave the broker
/// running when killed. Returns the bootstrap address.
pub fn kafka() -> (Server, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = Command::new(tool("noida-db"));
    cmd.arg("start")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--host", "127.0.0.1", "--only", "kafka", "--kafka-port"])
        .arg(port.to_string());
    let server = Server::start("noida-db (kafka)", cmd, port, dir);
    (server, format!("127.0.0.1:{port}"))
}

/// The emulators' URLs of a [`sandbox_process`].
pub struct SandboxUrls {
    pub pinot: String,
    pub connect: String,
    pub tactical: String,
}

/// `ofctl sandbox` in its own process, adding `latency` (e.g. `5ms`) to every request: the
/// emulators' memory and CPU then stay out of the caller's figures (the scale benchmark).
pub fn sandbox_process(latency: &str, tactical_api_key: &str) -> (Server, SandboxUrls) {
    let dir = tempfile::tempdir().expect("tempdir");
    let [pinot, connect, tactical] = [free_port(), free_port(), free_port()];
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ofctl"));
    cmd.arg("sandbox")
        .args(["--pinot", &addr(pinot)])
        .args(["--connect", &addr(connect)])
        .args(["--tactical", &addr(tactical)])
        .args(["--latency", latency])
        .env("OFCTL_SANDBOX_TACTICAL_API_KEY", tactical_api_key);
    // All three listeners are bound before any is served, so one answering means all are.
    let server = Server::start("ofctl sandbox", cmd, tactical, dir);
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let urls = SandboxUrls {
        pinot: url(pinot),
        connect: url(connect),
        tactical: url(tactical),
    };
    (server, urls)
}

/// `openssl s_server` answering HTTPS on 127.0.0.1 with `cert` and `key`, serving the files
/// under `dir` (`-WWW`: `GET /a/b` answers 200 with the file `a/b`).
pub fn https_file_server(dir: tempfile::TempDir, cert: &Path, key: &Path) -> Server {
    let port = free_port();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .current_dir(dir.path())
        .stdin(Stdio::null());
    Server::start("openssl s_server", cmd, port, dir)
}

/// Result of one `ofctl` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The request counts ofctl logs at `OFCTL_LOG=info` after `marker` ("read live state in"
    /// or "applied in"), e.g. `{"connect": {"reads": 1, "writes": 0}}`.
    pub fn logged_requests(&self, marker: &str) -> serde_json::Value {
        let line = self
            .stderr
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| {
                panic!("no `{marker}` log line (run with OFCTL_LOG=info): {self:?}")
            });
        let json = &line[line
            .find('{')
            .unwrap_or_else(|| panic!("no counts in `{line}`"))..];
        serde_json::from_str(json).unwrap_or_else(|e| panic!("bad counts in `{line}`: {e}"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn ofctl(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ofctl"));
    cmd.args(args).env_remove("OFCTL_LOG").env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.stdin(Stdio::null()).output().expect("run ofctl");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A manifest folder in a temporary directory.
pub struct ManifestDir {
    pub dir: tempfile::TempDir,
}

impl ManifestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn arg(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    pub fn write(&self, name: &str, content: &str) -> &Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create manifest subfolder");
        }
        std::fs::write(path, content).expect("write manifest file");
        self
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove manifest file");
    }

    /// Copies every file of a repo folder (e.g. `desired-state`) into this one.
    pub fn copy_from(&self, repo_relative: &str) -> &Self {
        copy_tree(&repo_root().join(repo_relative), self.dir.path());
        self
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read folder").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

/// A NATS stream document.
pub fn stream(name: &str, spec: &str) -> String {
    format!("apiVersion: ofctl.openframe.io/v1\nkind: NatsStream\nmetadata:\n  name: {name}\nspec:\n{spec}\n---\n")
}

/// Credentials that `desired-state/` takes from the environment (test values): loading the
/// integrated tools resolves them. The tool databases' passwords are variables with dev
/// defaults (desired-state/ofctl.toml); these set them too, so that masking is tested.
pub const DESIRED_STATE_SECRETS: &[(&str, &str)] = &[
    (
        "OFCTL_ENCRYPTION_PASSWORD",
        "test-encryption-password-0123456789abcdef",
    ),
    ("OFCTL_ENCRYPTION_SALT", "5c0744940b5c369b"),
    ("OFCTL_TRMM_USER", "trmm-admin"),
    ("OFCTL_TRMM_PASSWORD", "trmm-Secret-Pw-1"),
    ("OFCTL_TACTICAL_API_KEY", "tactical-Api-Key-2"),
    ("OFCTL_FLEET_ADMIN_EMAIL", "admin@example.test"),
    ("OFCTL_FLEET_ADMIN_PASSWORD", "fleet-Secret-Pw-4"),
    ("OFCTL_MESH_USER", "mesh-admin"),
    ("OFCTL_MESH_PASSWORD", "mesh-Secret-Pw-6"),
    ("OFCTL_TRMM_DB_PASSWORD", "pg-Secret-Pw-3"),
    ("OFCTL_FLEET_DB_PASSWORD", "mysql-Secret-Pw-5"),
    ("OFCTL_MESH_MONGO_PASSWORD", "mongo-Secret-Pw-7"),
];

/// The local stack started by `scripts/dev-stack.sh up` in a private stack folder, stopped
/// (and its data removed) when dropped.
pub struct DevStack {
    dir: tempfile::TempDir,
    /// The variables of the stack's env file (`OFCTL_CONNECT_URL`, `OFCTL_POSTGRES_PORT`, ...).
    pub env: std::collections::BTreeMap<String, String>,
}

impl DevStack {
    /// Runs `dev-stack.sh up ARGS`; the error carries the script's output.
    pub fn up(args: &[&str]) -> Result<DevStack, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let out = Command::new(repo_root().join("scripts/dev-stack.sh"))
            .arg("up")
            .args(args)
            .env("OFCTL_STACK_DIR", dir.path())
            .env("OFCTL_TOOLS_DIR", tools_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run dev-stack.sh: {e}"))?;
        // From here on, dropping the value runs `down`, also on the error paths below.
        let mut stack = DevStack {
            dir,
            env: Default::default(),
        };
        if !out.status.success() {
            return Err(format!(
                "dev-stack.sh up {} failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let env_file = stack.dir.path().join("env");
        let text = std::fs::read_to_string(&env_file)
            .map_err(|e| format!("{}: {e}", env_file.display()))?;
        // Lines are `export NAME='value'`.
        for line in text.lines() {
            if let Some((name, value)) =
                line.strip_prefix("export ").and_then(|l| l.split_once('='))
            {
                stack
                    .env
                    .insert(name.to_string(), value.trim_matches('\'').to_string());
            }
        }
        Ok(stack)
    }

    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("the dev stack's env file has no {name}: {:?}", self.env))
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/dev-stack.sh"))
            .args(["down", "--purge"])
            .env("OFCTL_STACK_DIR", self.dir.path())
            .env("OFCTL_TOOLS_DIR", tools_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// redis-server without persistence.
pub fn redis() -> (Server, String) {
    let port = free_port();
    (redis_on(port), format!("redis://127.0.0.1:{port}"))
}

/// redis-server without persistence on `port` (e.g. to restart one that was stopped).
pub fn redis_on(port: u16) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(tool("redis-server"));
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ])
    .arg(dir.path());
    Server::start("redis-server", cmd, port, dir)
}

/// The API token every [`Watch`] gets in `OFCTL_API_TOKEN`; a tenant config enables it with
/// [`API_SECTION`].
pub const API_TOKEN: &str = "test-api-token-5f0c7d2e9b";

/// The `[api]` section that makes a tenant accept [`API_TOKEN`] (append to an ofctl.toml).
pub const API_SECTION: &str = "[api]\ntoken = \"${env:OFCTL_API_TOKEN}\"\n";

/// A client that sends [`API_TOKEN`] as its bearer token.
pub fn api_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {API_TOKEN}").parse().expect("header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A throw-away certificate authority (`ca.pem`, `ca.key`) and a server certificate it signed
/// for 127.0.0.1 (`server.pem`, `server.key`), written into `dir` with the `openssl` command
/// (scripts/dev-stack.sh installs it).
pub fn write_test_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command makes the test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=ofctl test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

/// redis-server serving TLS only, with a certificate for 127.0.0.1 from a throw-away CA (made
/// with the `openssl` command). Returns the server, its `rediss://` URL and the CA file.
pub fn redis_tls() -> (Server, String, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    write_test_pki(dir.path());
    let port = free_port();
    let mut cmd = Command::new(tool("redis-server"));
    cmd.args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .args([
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--tls-cert-file")
    .arg(path("server.pem"))
    .arg("--tls-key-file")
    .arg(path("server.key"))
    .arg("--tls-ca-cert-file")
    .arg(path("ca.pem"))
    .arg("--dir")
    .arg(dir.path());
    let ca = path("ca.pem");
    let server = Server::start("redis-server (TLS)", cmd, port, dir);
    (server, format!("rediss://127.0.0.1:{port}"), ca)
}

/// A running `ofctl watch`, stopped with SIGTERM (and killed if that fails) when dropped.
pub struct Watch {
    child: Child,
    /// The platform API (`/v1/*`).
    pub api: String,
    /// The management port (`/management/v1/health`, `/healthz`, `/readyz`, `/metrics`).
    pub management: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watch {
    pub fn start(args: &[&str]) -> Watch {
        Self::start_with_env(args, &[])
    }

    /// Like [`Watch::start`], with extra environment variables (and `OFCTL_LOG` from them if given).
    pub fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Watch {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, management_port) = (free_port(), free_port());
        let log = dir.path().join("watch.log");
        let file = std::fs::File::create(&log).expect("log file");
        let listen = format!("127.0.0.1:{port}");
        let management = format!("127.0.0.1:{management_port}");
        let mut full = vec![
            "watch",
            "--listen",
            &listen,
            "--management-listen",
            &management,
        ];
        full.extend_from_slice(args);
        let mut child = Command::new(env!("CARGO_BIN_EXE_ofctl"))
            .args(&full)
            .env("OFCTL_LOG", "info")
            .env("OFCTL_API_TOKEN", API_TOKEN)
            .envs(envs.iter().copied())
            .stdout(Stdio::from(file.try_clone().expect("clone")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start ofctl watch");
        wait_for_port(port, &mut child, "ofctl watch", &log);
        wait_for_port(management_port, &mut child, "ofctl watch", &log);
        Watch {
            child,
            api: format!("http://{listen}"),
            management: format!("http://{management}"),
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let status = sigterm(&mut self.child);
        if status.is_none() {
            let _ = self.child.kill();
        }
        status.and_then(|s| s.code())
    }

    /// GET `path` from the port that serves it: `/v1/*` from the API (with [`API_TOKEN`]),
    /// anything else from the management port.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let base = if path.starts_with("/v1/") {
            &self.api
        } else {
            &self.management
        };
        let resp = api_client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("watch API answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Polls `check` every 50 ms until it returns true or `limit` passes; returns the time taken.
    pub async fn until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while started.elapsed() < limit {
            if check().await {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// The platform's whole desired state (`desired-state/`, its ofctl.toml included) in a
/// temporary folder. Its Mongo documents need a Mongo-wire server ([`mongo`]) and the
/// credentials of [`DESIRED_STATE_SECRETS`]; [`platform_env`] supplies both.
pub fn desired_state() -> ManifestDir {
    let m = ManifestDir::new();
    m.copy_from("desired-state");
    m
}

/// The variables desired-state/ofctl.toml reads: its credentials ([`DESIRED_STATE_SECRETS`]),
/// and its endpoints pointed at the sandbox emulators and at real NATS, Kafka and Mongo servers.
pub fn platform_env(
    sandbox: &ofctl::sandbox::Sandbox,
    tactical_api_key: &str,
    nats_url: &str,
    brokers: &str,
    mongo_uri: &str,
) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<&str, &str> =
        DESIRED_STATE_SECRETS.iter().copied().collect();
    env.extend([
        ("OFCTL_NATS_URL", nats_url),
        ("OFCTL_PINOT_URL", sandbox.pinot_url.as_str()),
        ("OFCTL_CONNECT_URL", sandbox.connect_url.as_str()),
        ("OFCTL_TACTICAL_URL", sandbox.tactical_url.as_str()),
        ("OFCTL_TACTICAL_API_KEY", tactical_api_key),
        ("OFCTL_KAFKA_BROKERS", brokers),
        ("OFCTL_MONGO_URI", mongo_uri),
    ]);
    env.into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Borrowed pairs for [`ofctl`] from owned ones.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The change for `address` in a JSON plan (`ofctl plan --format json`); panics naming the
/// address when the plan has none.
pub fn change<'a>(plan: &'a serde_json::Value, address: &str) -> &'a serde_json::Value {
    plan["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("{address} not in plan: {plan:#}"))
}

/// A category of the platform's real files copied into the repo (`tests/fixtures/openframe/`,
/// provenance in its INDEX.tsv). They are part of every clone, so a missing folder fails the
/// test with where it was expected, rather than letting a test that read nothing pass.
pub fn platform_fixtures(category: &str) -> PathBuf {
    let dir = repo_root().join("tests/fixtures/openframe").join(category);
    assert!(
        dir.join("INDEX.tsv").is_file(),
        "platform fixtures not found at {}: they belong to the repo (tests/fixtures/README.md); restore them with `git checkout -- tests/fixtures`",
        dir.display()
    );
    dir
}

/// The in-process emulators (`ofctl::sandbox`: Pinot, Kafka Connect, Tactical RMM) on free
/// loopback ports, with `faults`, accepting `tactical_api_key` (else the sandbox's default) as
/// Tactical's X-API-KEY. They serve on the test's runtime: a test that blocks on `ofctl()`
/// runs on a multi-threaded one.
pub async fn emulators(
    tactical_api_key: Option<&str>,
    faults: ofctl::sandbox::FaultConfig,
) -> ofctl::sandbox::Sandbox {
    let mut options = ofctl::sandbox::SandboxOptions {
        faults,
        ..Default::default()
    };
    if let Some(key) = tactical_api_key {
        options.tactical_api_key = key.to_string();
    }
    ofctl::sandbox::start(options)
        .await
        .expect("start the sandbox emulators")
}

/// The `ofctl.toml` section that points one system at `endpoint`: `[nats] url`,
/// `[kafka] brokers`, `[mongo] uri` (with the encryption settings from
/// `OFCTL_ENCRYPTION_PASSWORD`/`_SALT`), `[pinot]`/`[connect] url`, `[tactical] url` (with the
/// API key from `OFCTL_TACTICAL_API_KEY`).
pub fn endpoint_config(system: &str, endpoint: &str) -> String {
    match system {
        "kafka" => format!("[kafka]\nbrokers = \"{endpoint}\"\n"),
        "mongo" => format!(
            "[mongo]\nuri = \"{endpoint}\"\nencryption_password = \"${{env:OFCTL_ENCRYPTION_PASSWORD}}\"\nencryption_salt = \"${{env:OFCTL_ENCRYPTION_SALT}}\"\n"
        ),
        "tactical" => format!(
            "[tactical]\nurl = \"{endpoint}\"\napi_key = \"${{env:OFCTL_TACTICAL_API_KEY}}\"\n"
        ),
        "nats" | "pinot" | "connect" => format!("[{system}]\nurl = \"{endpoint}\"\n"),
        other => panic!("no endpoint config for system `{other}`"),
    }
}

/// Plans `doc` (a `kind` document) against `config`, whose `system` endpoint is a loopback
/// `port` nobody listens on, and checks that the plan fails naming the kind, the system and
/// the address.
pub fn assert_unreachable_is_a_clear_error(
    config: &str,
    doc: &str,
    kind: &str,
    system: &str,
    port: u16,
) {
    let m = ManifestDir::new();
    m.write("ofctl.toml", config).write("a.yaml", doc);
    let plan = ofctl(&["plan", "-f", m.arg()], &[]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr
            .contains(&format!("cannot read {kind} from {system}")),
        "{plan:?}"
    );
    assert!(
        plan.stderr.contains(&format!("127.0.0.1:{port}")),
        "{plan:?}"
    );
}

/// A stream's config as the NATS server reports it (`$JS.API.STREAM.INFO`), `None` when the
/// stream does not exist. Panics when the server does not answer: callers expect it up.
pub async fn stream_config(url: &str, name: &str) -> Option<serde_json::Value> {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let msg = client
        .request(format!("$JS.API.STREAM.INFO.{name}"), "".into())
        .await
        .expect("stream info request");
    let info: serde_json::Value = serde_json::from_slice(&msg.payload).expect("stream info JSON");
    info.get("config").cloned()
}

/// The sum of the Prometheus samples whose line starts with `prefix`.
pub fn metric(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
