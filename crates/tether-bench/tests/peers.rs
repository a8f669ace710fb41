//! Every workload against a real Redis and a real NATS server, each started here on a free
//! port with a fresh data directory and the durability settings the comparison uses, at a
//! scale small enough for any machine. The checks are about correctness (everything
//! acknowledged, delivered, read back), never about speed.
//!
//! A missing server binary skips its tests with a message, unless `TETHER_REQUIRE_PEERS=1`,
//! which makes it a failure.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use tether_bench::BenchArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

/// A server process of our own, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(binary: &str, args: impl FnOnce(u16, &str) -> Vec<String>) -> Option<Server> {
        let Some(path) = find_binary(binary) else {
            assert!(
                std::env::var("TETHER_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{binary} is not installed and TETHER_REQUIRE_PEERS=1"
            );
            eprintln!("skipped: {binary} is not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new(path)
            .args(args(port, dir.path().to_str().expect("UTF-8 temp path")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let mut server = Server {
            child,
            port,
            _dir: dir,
        };
        server.wait_until_listening(binary);
        Some(server)
    }

    fn wait_until_listening(&mut self, binary: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{binary} exited with {status} before listening");
            }
            assert!(Instant::now() < deadline, "{binary} did not listen in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().expect("local address").port()
}

/// Redis as the comparison runs it: every write fsynced before the reply, no snapshots.
fn redis() -> Option<Server> {
    Server::start("redis-server", |port, dir| {
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            dir,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]
        .map(String::from)
        .to_vec()
    })
}

/// NATS with JetStream storing on disk.
fn nats() -> Option<Server> {
    Server::start("nats-server", |port, dir| {
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            dir,
        ]
        .map(String::from)
        .to_vec()
    })
}

fn url(system: &str, server: &Server) -> String {
    format!("{system}://127.0.0.1:{}", server.port)
}

/// Runs `tether-bench` with `args` and returns its JSON report.
async fn bench(args: &[&str]) -> anyhow::Result<Value> {
    let out = tempfile::NamedTempFile::new()?;
    let json = out.path().to_str().expect("UTF-8 temp path").to_string();
    let mut argv = vec!["bench", "--json", &json];
    argv.extend_from_slice(args);
    tether_bench::run(Cli::try_parse_from(argv)?.bench).await?;
    Ok(serde_json::from_str(&std::fs::read_to_string(out.path())?)?)
}

const APPENDS: &[&str] = &[
    "--workload",
    "appends",
    "--connections",
    "2",
    "--streams",
    "3",
    "--warmup",
    "100ms",
    "--duration",
    "500ms",
];

const FANOUT: &[&str] = &[
    "--workload",
    "fanout",
    "--subscribers",
    "3",
    "--fanout-messages",
    "20",
    "--fanout-interval",
    "5ms",
    "--drain-timeout",
    "20s",
];

const CATCHUP: &[&str] = &[
    "--workload",
    "catchup",
    "--messages",
    "2000",
    "--batch",
    "300",
];

const IDLE: &[&str] = &[
    "--workload",
    "idle",
    "--idle-subscribers",
    "20",
    "--idle-streams",
    "4",
];

fn with<'a>(system: &'a str, url: &'a str, workload: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--system", system, "--url", url];
    args.extend_from_slice(workload);
    args
}

fn check_appends(report: &Value, system: &str) {
    assert_eq!(report["system"], system);
    let a = &report["appends"][0];
    assert_eq!(a["connections"], 2);
    assert_eq!(a["streams"], 3);
    assert!(a["ok"].as_u64().unwrap() > 0, "{a}");
    assert_eq!(a["errors"], 0, "{a}");
    assert_eq!(a["latency"]["count"], a["ok"]);
}

fn check_fanout(report: &Value) {
    let f = &report["fanout"][0];
    assert_eq!(f["connected"], 3, "{f}");
    assert_eq!(f["published"], 20, "{f}");
    assert_eq!(f["delivered"], 60, "{f}");
    assert_eq!(f["missing"], 0, "{f}");
    assert_eq!(f["duplicates"], 0, "{f}");
    assert_eq!(f["malformed"], 0, "{f}");
    assert_eq!(f["latency"]["count"], 60, "{f}");
}

fn check_catchup(report: &Value, preloaded: bool) {
    let c = &report["catchup"];
    assert_eq!(c["messages_read"], 2000, "{c}");
    assert_eq!(c["verified"], true, "{c}");
    assert_eq!(c["preloaded"], preloaded, "{c}");
    assert_eq!(
        c["bytes_read"],
        2000 * 256,
        "payloads of the default size: {c}"
    );
}

fn check_idle(report: &Value) {
    let i = &report["idle"];
    assert_eq!(i["subscribers"], 20, "{i}");
    assert_eq!(i["streams"], 4, "{i}");
    assert_eq!(i["connected"], 20, "{i}");
    assert!(i["rss_before_kb"].as_u64().unwrap() > 0, "{i}");
    assert!(i["rss_with_subscribers_kb"].as_u64().unwrap() > 0, "{i}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_appends_are_acknowledged_without_errors() {
    let Some(server) = redis() else { return };
    let url = url("redis", &server);
    check_appends(
        &bench(&with("redis", &url, APPENDS)).await.unwrap(),
        "redis",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_fanout_reaches_every_subscriber_once() {
    let Some(server) = redis() else { return };
    let url = url("redis", &server);
    check_fanout(&bench(&with("redis", &url, FANOUT)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_catchup_reads_back_what_was_preloaded_and_reuses_the_stream() {
    let Some(server) = redis() else { return };
    let url = url("redis", &server);
    let mut args = with("redis", &url, CATCHUP);
    args.extend(["--catchup-stream", "bench:reused"]);
    check_catchup(&bench(&args).await.unwrap(), true);
    check_catchup(&bench(&args).await.unwrap(), false);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_idle_subscribers_all_wait_and_memory_is_sampled() {
    let Some(server) = redis() else { return };
    let (url, pid) = (url("redis", &server), server.pid());
    let mut args = with("redis", &url, IDLE);
    args.extend(["--server-pid", &pid]);
    check_idle(&bench(&args).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_appends_are_acknowledged_without_errors() {
    let Some(server) = nats() else { return };
    let url = url("nats", &server);
    check_appends(&bench(&with("nats", &url, APPENDS)).await.unwrap(), "nats");
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_fanout_reaches_every_subscriber_once() {
    let Some(server) = nats() else { return };
    let url = url("nats", &server);
    check_fanout(&bench(&with("nats", &url, FANOUT)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_catchup_reads_back_what_was_preloaded_and_reuses_the_stream() {
    let Some(server) = nats() else { return };
    let url = url("nats", &server);
    let mut args = with("nats", &url, CATCHUP);
    args.extend(["--catchup-stream", "REUSED"]);
    check_catchup(&bench(&args).await.unwrap(), true);
    check_catchup(&bench(&args).await.unwrap(), false);
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_idle_subscribers_all_wait_and_memory_is_sampled() {
    let Some(server) = nats() else { return };
    let (url, pid) = (url("nats", &server), server.pid());
    let mut args = with("nats", &url, IDLE);
    args.extend(["--server-pid", &pid]);
    check_idle(&bench(&args).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catchup_stream_of_another_size_is_refused_not_reused() {
    let Some(server) = redis() else { return };
    let url = url("redis", &server);
    let mut args = with("redis", &url, CATCHUP);
    args.extend(["--catchup-stream", "bench:sized"]);
    bench(&args).await.unwrap();
    let other_size = ["--workload", "catchup", "--messages", "1000"];
    let mut args = with("redis", &url, &other_size);
    args.extend(["--catchup-stream", "bench:sized"]);
    let err = bench(&args).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("1 workload(s) failed"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_is_refused_for_redis_and_nats() {
    for system in ["redis", "nats"] {
        let url = format!("{system}://127.0.0.1:1");
        let err = bench(&["--system", system, "--url", &url, "--workload", "lifecycle"])
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("task API"), "{err:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_of_the_wrong_scheme_is_refused() {
    let err = bench(&["--system", "nats", "--url", "http://127.0.0.1:1"])
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("nats://"), "{err:#}");
}
