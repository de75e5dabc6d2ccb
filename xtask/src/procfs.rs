//! What the harnesses read of a process from `/proc`: its memory and the
//! CPU time the kernel counted for it.

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `RssAnon`, …); 0 when unreadable.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid`, MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS") as f64 / 1024.0
}

/// The most memory `pid` has had resident since it started (its high-water
/// mark), MiB.
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmHWM") as f64 / 1024.0
}

/// Anonymous resident memory of `pid`, KiB.
pub(crate) fn rss_anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon")
}

/// Anonymous resident memory of `pid`, MiB.
pub(crate) fn rss_anon_mib(pid: u32) -> f64 {
    rss_anon_kib(pid) as f64 / 1024.0
}

/// CPU seconds (user + system) the kernel counted for `pid` so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `)` that closes the command name: utime is the 12th, stime the 13th.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}
