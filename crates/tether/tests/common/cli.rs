//! Running the `tether` CLI as a user would: the real binary, a clean environment, a
//! temporary home directory.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Bound for one short CLI command; only a hang comes near it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings every CLI invocation of a test shares.
pub struct CliEnv {
    home: TempDir,
    url: String,
    data_dir: PathBuf,
}

/// A finished CLI invocation.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Panics with both outputs unless the command exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl CliEnv {
    /// A CLI pointed at `url`, finding its token the way a user on the server's machine would:
    /// in the server's data dir.
    pub fn new(url: &str, data_dir: &Path) -> CliEnv {
        CliEnv {
            home: tempfile::Builder::new()
                .prefix("tether-cli-home-")
                .tempdir()
                .expect("create a home directory"),
            url: url.to_string(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `tether ARGS` with only this test's settings in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("TETHER_URL", &self.url)
            .env("TETHER_DATA_DIR", &self.data_dir)
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `tether ARGS` to the end.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_command(self.command(args)).await
    }

    /// The task's raw log, or its timeline view, through `tether events` as a script reads it.
    pub async fn events(&self, id: &str, timeline: bool) -> Vec<tether_types::EventAt> {
        let mut args = vec!["events", id];
        if timeline {
            args.push("--timeline");
        }
        let run = self.run(&args).await;
        run.expect_code(0);
        run.stdout_lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Runs a command made with [`CliEnv::command`] and adjusted by the test.
    pub async fn run_command(&self, mut command: Command) -> Run {
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let child = command.spawn().expect("spawn the tether CLI");
        match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
            Ok(output) => {
                let output = output.expect("wait for the tether CLI");
                Run {
                    status: output.status,
                    stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                }
            }
            Err(_) => panic!(
                "`tether {}` did not finish within {COMMAND_TIMEOUT:?}",
                args.join(" ")
            ),
        }
    }

    /// Starts `tether ARGS` and collects its output line by line while it runs.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self.command(args).spawn().expect("spawn the tether CLI");
        let stdout = collect_lines(child.stdout.take().expect("piped stdout"));
        let stderr = collect_lines(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout,
            stderr,
        }
    }
}

/// A CLI process still running, with what it printed so far.
pub struct Running {
    child: Child,
    stdout: watch::Receiver<Vec<String>>,
    stderr: watch::Receiver<Vec<String>>,
}

impl Running {
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.borrow().clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.borrow().clone()
    }

    /// Waits until stdout holds at least `n` lines.
    pub async fn wait_for_stdout_lines(&mut self, n: usize, within: Duration) {
        let waited = tokio::time::timeout(within, self.stdout.wait_for(|lines| lines.len() >= n));
        if !matches!(waited.await, Ok(Ok(_))) {
            panic!(
                "expected {n} lines on stdout within {within:?}; got:\n{}\nstderr:\n{}",
                self.stdout_lines().join("\n"),
                self.stderr_lines().join("\n")
            );
        }
    }

    /// Waits until a stderr line contains `text`.
    pub async fn wait_for_stderr(&mut self, text: &str, within: Duration) {
        let waited = tokio::time::timeout(
            within,
            self.stderr
                .wait_for(|lines| lines.iter().any(|l| l.contains(text))),
        );
        if !matches!(waited.await, Ok(Ok(_))) {
            panic!(
                "expected {text:?} on stderr within {within:?}; got:\n{}",
                self.stderr_lines().join("\n")
            );
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub async fn interrupt(&self) {
        let pid = self.child.id().expect("the CLI is running").to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -INT {pid} failed");
    }

    /// SIGKILLs the process, as a crash would end it, and waits for it to be gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL the CLI");
    }

    /// Waits for the process to exit and for its output to be read to the end.
    pub async fn finish(mut self, within: Duration) -> (ExitStatus, Vec<String>, Vec<String>) {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for the tether CLI"),
            Err(_) => panic!(
                "the CLI did not exit within {within:?}; stdout:\n{}\nstderr:\n{}",
                self.stdout_lines().join("\n"),
                self.stderr_lines().join("\n")
            ),
        };
        // The readers finish at end of file, which follows the exit.
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.stdout.wait_for(|_| false)).await;
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.stderr.wait_for(|_| false)).await;
        (status, self.stdout_lines(), self.stderr_lines())
    }
}

/// Reads `pipe` line by line into a watch channel; the sender is dropped at end of file,
/// which ends any `wait_for` on the receiver.
fn collect_lines(pipe: impl AsyncRead + Unpin + Send + 'static) -> watch::Receiver<Vec<String>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tx.send_modify(|all| all.push(line));
        }
    });
    rx
}
