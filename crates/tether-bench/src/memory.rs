//! The server's resident memory, read from `/proc` when the bench is told the server's pid.
//! Linux only; elsewhere the figures are simply absent.

/// `VmRSS` of process `pid` in KiB, or `None` if it cannot be read.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
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
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(4321));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_has_some_resident_memory() {
        assert!(rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
