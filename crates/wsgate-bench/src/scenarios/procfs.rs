//! The server's CPU time and memory, read from `/proc` as `scripts/bench` read
//! them: CPU is the scheduler's run time of every live thread
//! (`/proc/<pid>/task/*/schedstat`, user + kernel, in nanoseconds, finer than
//! the clock ticks of `stat`), memory is `VmRSS`.

use std::io;

/// One reading of a process's CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// User + kernel run time of every live thread, in nanoseconds.
    pub run_ns: u64,
    /// User-space time of the process (`stat` field 14), in clock ticks.
    pub user_ticks: u64,
    /// Kernel time of the process (`stat` field 15), in clock ticks.
    pub system_ticks: u64,
}

impl CpuTime {
    /// Reads `pid`'s CPU time. A thread that exits while the threads are being
    /// read is skipped: its time is gone from `/proc` either way.
    pub fn of(pid: u32) -> io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let (user_ticks, system_ticks) = parse_stat(&stat).ok_or_else(|| bad("stat", &stat))?;
        let mut run_ns = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let Ok(task) = task else { continue };
            if let Ok(line) = std::fs::read_to_string(task.path().join("schedstat"))
                && let Some(ns) = parse_schedstat(&line)
            {
                run_ns += ns;
            }
        }
        Ok(Self {
            run_ns,
            user_ticks,
            system_ticks,
        })
    }

    /// The run time spent since `start`, in nanoseconds.
    pub fn since(&self, start: &Self) -> u64 {
        self.run_ns.saturating_sub(start.run_ns)
    }
}

/// `pid`'s resident set (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss_kib(&status).ok_or_else(|| bad("status", "no VmRSS line"))
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line. The command
/// name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<(u64, u64)> {
    let rest = &line[line.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// The first field of a `schedstat` line: time spent running, in nanoseconds.
pub fn parse_schedstat(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// The `VmRSS:` line of `/proc/<pid>/status`, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn bad(file: &str, text: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected /proc {file}: {text}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    517 88 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat(line), Some((517, 88)));
        assert_eq!(parse_stat("4242 (wsgate) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
    }

    #[test]
    fn schedstat_run_time_is_the_first_field() {
        assert_eq!(parse_schedstat("123456789 2345 67\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn vm_rss_in_kib() {
        let status = "Name:\twsgate\nVmPeak:\t  900 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kib(status), Some(20480));
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        // Burn a little CPU so the reading cannot be zero.
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let cpu = CpuTime::of(pid).unwrap();
        assert!(cpu.run_ns > 0, "{cpu:?}");
        assert!(rss_kib(pid).unwrap() > 0);
        assert_eq!(cpu.since(&cpu), 0);
    }
}
