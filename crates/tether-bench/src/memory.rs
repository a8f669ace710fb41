//! The server's resident memory, read from `/proc` when the bench is told the server's pid.
//! Linux only; elsewhere the figures are simply absent.

use std::time::{Duration, Instant};

/// `VmRSS` of process `pid` in KiB, or `None` if it cannot be read.
pub fn rss_kb(pid: u32) -> Option<u64> {
    sample(Some(pid)).rss_kb
}

/// A process's resident memory at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// All of it (`VmRSS`).
    pub rss_kb: Option<u64>,
    /// The anonymous part (`RssAnon`): heap and stacks, without file-backed pages such as the
    /// program's code or a memory-mapped database file, which the kernel can drop and read
    /// again. A server that reads its data through `mmap` shows what it read in `VmRSS`.
    pub anon_kb: Option<u64>,
}

/// Samples process `pid`, if there is one to sample.
pub fn sample(pid: Option<u32>) -> Sample {
    let status = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
    let field = |name| status.as_deref().and_then(|s| parse_kb(s, name));
    Sample {
        rss_kb: field("VmRSS:"),
        anon_kb: field("RssAnon:"),
    }
}

/// Samples process `pid` once its RSS has stopped falling: memory that earlier work left
/// behind (pages of a file read through `mmap`, allocator caches) is returned over a few
/// seconds, at a pace that differs between servers. Samples every half second until the RSS
/// falls by less than 1% between two samples, or `limit` has passed.
pub async fn at_rest(pid: Option<u32>, limit: Duration) -> Sample {
    let deadline = Instant::now() + limit;
    let mut last = sample(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sample(pid);
        let falling = match (last.rss_kb, now.rss_kb) {
            (Some(before), Some(after)) => after + before / 100 < before,
            _ => false,
        };
        if !falling || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

fn parse_kb(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nRssAnon:\t 1200 kB\n";
        assert_eq!(parse_kb(status, "VmRSS:"), Some(4321));
        assert_eq!(parse_kb(status, "RssAnon:"), Some(1200));
        assert_eq!(parse_kb("Name:\tx\n", "VmRSS:"), None);
    }

    #[test]
    fn own_process_has_some_resident_memory() {
        let own = sample(Some(std::process::id()));
        assert!(own.rss_kb.is_some_and(|kb| kb > 0));
        assert!(own
            .anon_kb
            .is_some_and(|kb| kb > 0 && Some(kb) <= own.rss_kb));
        assert!(sample(None).rss_kb.is_none());
    }
}
