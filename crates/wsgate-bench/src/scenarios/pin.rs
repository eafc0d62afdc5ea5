//! CPU pinning with `sched_setaffinity`, as `scripts/bench` pinned with
//! `taskset`: the server on CPU 0, the bench (and everything this program
//! starts for it, such as the OTLP collector) on CPU 1, so neither steals the
//! other's core and the server's CPU time per delivery is comparable between
//! runs.

use std::io;

/// The server's core.
pub const SERVER_CPU: usize = 0;
/// The bench's core: this process and the collector.
pub const BENCH_CPU: usize = 1;

/// Pins the calling thread (and every thread it starts afterwards, which
/// inherit its mask) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    set_affinity(0, &single(cpu))
}

/// Pins this thread to the bench's CPU if both CPUs can be pinned to; on
/// failure it leaves the thread's mask as it was and returns false.
pub fn pin_bench() -> bool {
    let Ok(original) = get_affinity() else {
        return false;
    };
    if pin_current_thread(SERVER_CPU).is_ok() && pin_current_thread(BENCH_CPU).is_ok() {
        return true;
    }
    let _ = set_affinity(0, &original);
    false
}

/// Makes the child of `command` run on `cpu` from its first instruction: the
/// mask is set between fork and exec, so no thread of the child ever runs
/// elsewhere.
pub fn pin_command(command: &mut tokio::process::Command, cpu: usize) {
    let mask = single(cpu);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // the sched_setaffinity system call on a mask built before the fork: no
    // allocation, no lock, async-signal-safe.
    unsafe {
        command.pre_exec(move || set_affinity(0, &mask));
    }
}

fn single(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only writes the bit for `cpu` inside `set` (it ignores
    // CPUs beyond the set's size).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn get_affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: as in `single`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc == 0 {
        Ok(set)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_affinity(pid: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes from `set`.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Starts `command` with its output in `log` and nothing on its stdin, killed
/// when dropped, pinned to `cpu` if given: how the scenarios start the gateway
/// and the collector.
pub fn spawn_logged(
    mut command: tokio::process::Command,
    log: &std::path::Path,
    cpu: Option<usize>,
) -> anyhow::Result<tokio::process::Child> {
    use anyhow::Context as _;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    if let Some(cpu) = cpu {
        pin_command(&mut command, cpu);
    }
    let program = command.as_std().get_program().to_owned();
    command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_to_a_cpu_runs_there() {
        // In a thread of its own, so the test harness's threads keep their mask.
        std::thread::spawn(|| {
            pin_current_thread(0).expect("every machine has CPU 0");
            let set = get_affinity().unwrap();
            // SAFETY: CPU_ISSET and CPU_COUNT only read `set`.
            unsafe {
                assert!(libc::CPU_ISSET(0, &set));
                assert_eq!(libc::CPU_COUNT(&set), 1);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinning_to_a_cpu_that_does_not_exist_fails_and_changes_nothing() {
        std::thread::spawn(|| {
            let before = get_affinity().unwrap();
            assert!(pin_current_thread(libc::CPU_SETSIZE as usize - 1).is_err());
            let after = get_affinity().unwrap();
            // SAFETY: CPU_EQUAL only reads both sets.
            assert!(unsafe { libc::CPU_EQUAL(&before, &after) });
        })
        .join()
        .unwrap();
    }
}
