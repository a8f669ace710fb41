//! Disk space: the gauges `/metrics` shows, and a real full disk (a small tmpfs) that the
//! embedded store must come back from once a little space is freed.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use hyper::StatusCode;
use support::{eventually, on_both_backends, Backend, Server};
use tether_store::sqlite::disk::RESERVE_FILE;
use tether_store::sqlite::QUIET_WAL_BYTES;

/// The value of gauge `name` in a scrape, if it is there.
fn gauge(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn scrape(s: &Server) -> String {
    let r = s.call("GET", "/metrics", None, &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    String::from_utf8_lossy(&r.body).into_owned()
}

async fn metrics_show_the_free_disk_space_and_on_sqlite_the_wal_size(backend: Backend) {
    let sqlite = matches!(backend, Backend::Sqlite);
    let s = Server::start_on_with(backend, |c| c.disk_reserve_bytes = 1 << 20).await;
    let metrics = scrape(&s).await;
    let free = gauge(&metrics, "tether_disk_free_bytes").expect("tether_disk_free_bytes");
    assert!(free > 0, "{metrics}");
    assert!(metrics.contains("# TYPE tether_disk_free_bytes gauge"));
    let wal = gauge(&metrics, "tether_sqlite_wal_bytes");
    if sqlite {
        assert!(wal.is_some(), "{metrics}");
        assert!(metrics.contains("# TYPE tether_sqlite_wal_bytes gauge"));
        let reserve = s.dir.path().join(RESERVE_FILE);
        assert_eq!(std::fs::metadata(reserve).unwrap().len(), 1 << 20);
    } else {
        assert_eq!(wal, None, "PostgreSQL has no WAL of ours: {metrics}");
    }
    s.stop().await;
}

on_both_backends!(metrics_show_the_free_disk_space_and_on_sqlite_the_wal_size);

/// A tmpfs of `size` mounted on a temporary dir for the test's life; `None` when this
/// process may not mount (not root, no CAP_SYS_ADMIN).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs { dir })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server that a failed assertion left running must not keep the mount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

const CHUNK: usize = 256 << 10;
const RESERVE: u64 = 4 << 20;

async fn start(data: &Path) -> Server {
    let data: PathBuf = data.to_path_buf();
    Server::start_on_with(Backend::Sqlite, |c| {
        c.data_dir = data;
        c.disk_reserve_bytes = RESERVE;
    })
    .await
}

/// The length of everything in the stream at `path`, read page by page.
async fn read_all(s: &Server, path: &str) -> usize {
    let mut offset = "-1".to_string();
    let mut total = 0;
    loop {
        let page = s.get(&format!("{path}?offset={offset}"), &s.admin).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.status);
        total += page.body.len();
        if page.header("stream-up-to-date") == Some("true") {
            return total;
        }
        offset = page.header("stream-next-offset").unwrap().to_string();
    }
}

/// Writes `path` until the file system is full, as another program on the machine might.
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test]
async fn a_full_disk_refuses_appends_with_503_and_the_server_restarts_after_a_little_is_freed() {
    let fs = match Tmpfs::mount("16m") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!(
                "skipped: cannot mount a tmpfs to fill ({e}); run as root to test a full disk"
            );
            return;
        }
    };
    // Another program's files, one of which the operator deletes to make a little room.
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 1 << 20]).unwrap();
    let data = fs.path().join("data");
    let s = start(&data).await;
    assert!(data.join(RESERVE_FILE).exists(), "the reserve is set aside");
    let bin = [("content-type", "application/octet-stream")];
    let made = s
        .call("PUT", "/v1/stream/fill", Some(&s.admin), &bin, Bytes::new())
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{made:?}");

    // Append as fast as possible: the server refuses before the disk is full, with 503.
    let body = Bytes::from(vec![b'x'; CHUNK]);
    let mut acknowledged = 0usize;
    let append = || {
        s.call(
            "POST",
            "/v1/stream/fill",
            Some(&s.admin),
            &bin,
            body.clone(),
        )
    };
    loop {
        let r = append().await;
        if !r.status.is_success() {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
            assert!(r.code() == "STORAGE_UNAVAILABLE", "{r:?}");
            break;
        }
        acknowledged += 1;
        assert!(
            acknowledged < 64,
            "16 MiB took {acknowledged} appends of {CHUNK}"
        );
    }
    // Refused in time: the store goes quiet with room to checkpoint, and its WAL is emptied.
    eventually("the WAL to be emptied once appends are refused", || async {
        let wal = gauge(&scrape(&s).await, "tether_sqlite_wal_bytes")?;
        (wal <= QUIET_WAL_BYTES).then_some(())
    })
    .await;
    // Then something else fills the disk to the last byte: appends still get 503.
    fill_up(&fs.path().join("filler"));
    let r = append().await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    s.stop().await;

    // A little room, less than the reserve: a start gives the reserve back and comes up.
    std::fs::remove_file(&ballast).unwrap();
    let s = start(&data).await;
    assert!(
        !data.join(RESERVE_FILE).exists(),
        "a start on a nearly full disk gives the reserve back"
    );
    let stored = read_all(&s, "/v1/stream/fill").await;
    assert_eq!(
        stored,
        acknowledged * CHUNK,
        "every acknowledged append is there"
    );
    eventually("the WAL to be emptied after the restart", || async {
        let metrics = scrape(&s).await;
        let wal = gauge(&metrics, "tether_sqlite_wal_bytes")?;
        (wal <= QUIET_WAL_BYTES).then_some(())
    })
    .await;
    let free = gauge(&scrape(&s).await, "tether_disk_free_bytes").unwrap();
    eprintln!("refused after {acknowledged} appends of {CHUNK} bytes; {free} bytes free after the restart");
    s.stop().await;
    drop(fs);
}
