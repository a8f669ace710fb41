//! The server's resident memory, read from `/proc` when the bench is told the server's pid.
//! Linux only; elsewhere the figures are simply absent.

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
