//! Starting, killing and restarting the real `tether` binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a starting server may take to print its ready line. Generous on purpose: a debug
/// build on a busy 2-core machine recovering a database after SIGKILL can be slow.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

const READY_PREFIX: &str = "tether listening on ";

/// A temporary home for one server's life: the data directory, which survives restarts, and
/// one stderr log per start, kept next to it for diagnostics.
pub struct ServerHome {
    /// `None` only while being dropped.
    root: Option<TempDir>,
    starts: usize,
}

impl Default for ServerHome {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerHome {
    pub fn new() -> ServerHome {
        let root = tempfile::Builder::new()
            .prefix("tether-fault-")
            .tempdir()
            .expect("create a temporary directory");
        std::fs::create_dir(root.path().join("data")).expect("create the data directory");
        ServerHome {
            root: Some(root),
            starts: 0,
        }
    }

    fn root(&self) -> &Path {
        self.root.as_ref().expect("home not dropped").path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    /// The server prints its ready line before it writes the first admin token (it writes
    /// the file while it prepares to serve, and creates it before filling it), so a test that
    /// needs the token waits for the whole line to be there.
    async fn wait_for_admin_token(&self, log_path: &Path) {
        let path = self.data_dir().join("admin.token");
        let complete = async {
            loop {
                match std::fs::read_to_string(&path) {
                    Ok(text) if text.ends_with('\n') => return,
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        if tokio::time::timeout(STARTUP_TIMEOUT, complete)
            .await
            .is_err()
        {
            panic!(
                "no admin token in {} within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                path.display(),
                log_tail(log_path)
            );
        }
    }

    /// The first admin token, which a server started with [`Auth::Token`] writes on first
    /// start.
    pub fn admin_token(&self) -> String {
        let path = self.data_dir().join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// Starts `tether serve` on a free loopback port over this home's data directory and waits
    /// for its ready line.
    pub async fn start(&mut self) -> TestServer {
        self.start_at("127.0.0.1:0", Auth::Off).await
    }

    /// Starts `tether serve` on `listen` (a fixed port lets a restarted server be found where
    /// its clients left it) with the given authentication.
    pub async fn start_at(&mut self, listen: &str, auth: Auth) -> TestServer {
        self.start_with(listen, auth, &[]).await
    }

    /// Starts `tether serve` as [`ServerHome::start_at`] does, with more flags (short leases
    /// for worker tests, say).
    pub async fn start_with(&mut self, listen: &str, auth: Auth, extra: &[&str]) -> TestServer {
        self.starts += 1;
        let log_path = self.root().join(format!("server-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).expect("create the server log file");
        let data_dir = self.data_dir();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            // Only the flags below choose the server's settings, not the test's environment
            // (a developer's TETHER_DATABASE_URL, say).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--long-poll-timeout")
            .arg("500ms")
            .arg("--auth")
            .arg(auth.flag())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the tether binary");

        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout);
        let wait_ready = async {
            let mut line = String::new();
            loop {
                line.clear();
                let read = lines.read_line(&mut line).await?;
                if read == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                if let Some(url) = line.trim().strip_prefix(READY_PREFIX) {
                    return Ok(Some(url.trim_end_matches('/').to_string()));
                }
            }
        };
        let base_url = match tokio::time::timeout(STARTUP_TIMEOUT, wait_ready).await {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) => {
                let status = child.wait().await;
                panic!(
                    "tether exited before printing its ready line ({status:?}); stderr:\n{}",
                    log_tail(&log_path)
                );
            }
            Ok(Err(error)) => panic!("reading tether's stdout failed: {error}"),
            Err(_) => panic!(
                "tether printed no ready line within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                log_tail(&log_path)
            ),
        };
        assert!(
            base_url.starts_with("http://127.0.0.1:"),
            "unexpected listen address in the ready line: {base_url}"
        );
        if auth == Auth::Token {
            self.wait_for_admin_token(&log_path).await;
        }
        // Keep draining stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = lines.read_to_end(&mut sink).await;
        });
        TestServer {
            child,
            base_url,
            log_path,
        }
    }
}

impl Drop for ServerHome {
    /// Keeps the data directory and the server logs of a failed test for a post-mortem.
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            if std::thread::panicking() {
                eprintln!(
                    "kept the server's data and logs in {}",
                    root.keep().display()
                );
            }
        }
    }
}

/// How a test server authenticates requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Every request acts as the built-in admin (loopback only).
    Off,
    /// Bearer tokens; the first admin token is in `<data dir>/admin.token`.
    Token,
    /// Bearer tokens, on a database that another node set up first: the first admin token is
    /// in that node's data dir, not in this one's.
    TokenOfAnotherNode,
}

impl Auth {
    fn flag(self) -> &'static str {
        match self {
            Auth::Off => "off",
            Auth::Token | Auth::TokenOfAnotherNode => "token",
        }
    }
}

/// A loopback address with a port that was free a moment ago, for a server that must come back
/// on the same port after a restart.
pub fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("the bound address");
    addr.to_string()
}

/// A running `tether serve` process. Dropping it kills the process.
pub struct TestServer {
    child: Child,
    base_url: String,
    log_path: PathBuf,
}

impl TestServer {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Sends SIGKILL (no chance to flush or clean up) and reaps the process.
    pub async fn kill(mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "tether had already exited ({status}) before the test killed it; stderr:\n{}",
                log_tail(&self.log_path)
            );
        }
        // `Child::kill` sends SIGKILL on Unix and waits for the process to exit.
        self.child.kill().await.expect("SIGKILL the server");
    }
}

impl TestServer {
    /// Sends SIGTERM, the way a service manager stops the server, and waits (bounded) for the
    /// process to exit. Returns its exit status.
    pub async fn terminate(mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the server is running").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for the server"),
            Err(_) => panic!(
                "tether did not exit within {within:?} of SIGTERM; stderr:\n{}",
                log_tail(&self.log_path)
            ),
        }
    }
}

/// The last lines of a server log, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    lines[start..].join("\n")
}
