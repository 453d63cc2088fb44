//! What Linux says about a process and the machine: CPU time from `/proc/PID/stat`, peak
//! resident memory from `/proc/PID/status`, the CPU model and memory of the machine.
//!
//! The parsers are pure functions of the file's text so that they are tested on fixed samples;
//! the readers around them only do the I/O.

use anyhow::{bail, Context};

/// User plus system CPU time of a process, in clock ticks (`utime` + `stime`, the 14th and 15th
/// fields of `/proc/PID/stat`). Threads that already exited are included.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself hold spaces and parentheses;
    // everything after the last ')' is space separated, starting with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Field n is at index n - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy CPU time of the whole machine, in clock ticks: the first `cpu` line of `/proc/stat`
/// less its idle and iowait columns (guest time is already inside user and nice).
pub fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some(total - idle)
}

/// Busy CPU time of the whole machine in nanoseconds, every core added up.
pub fn machine_busy_ns(ticks_per_s: u64) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let ticks = parse_machine_busy_ticks(&text).context("/proc/stat has no cpu line")?;
    Ok(ticks.saturating_mul(1_000_000_000) / ticks_per_s.max(1))
}

/// The command name of a `/proc/PID/stat` line (the text in its outer parentheses).
pub fn parse_stat_comm(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    (open < close).then(|| &stat[open + 1..close])
}

/// CPU time, in nanoseconds, of every process whose command name is `comm` (a database
/// server's backends, say). A process that exits between two readings takes its time with it;
/// the servers measured here keep their connections for the whole run.
pub fn processes_cpu_ns(comm: &str, ticks_per_s: u64) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if parse_stat_comm(&text) == Some(comm) {
            ticks += parse_stat_cpu_ticks(&text).unwrap_or(0);
        }
    }
    ticks.saturating_mul(1_000_000_000) / ticks_per_s.max(1)
}

/// A `kB` line of `/proc/PID/status` (`VmHWM`, `VmRSS`), in bytes.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = value.split_ascii_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(n * 1024)
    })
}

/// The first `model name` of `/proc/cpuinfo`.
pub fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// CPU time of process `pid` in nanoseconds.
pub fn cpu_ns(pid: u32, ticks_per_s: u64) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let Some(ticks) = parse_stat_cpu_ticks(&text) else {
        bail!("{path} has no utime and stime fields")
    };
    Ok(ticks.saturating_mul(1_000_000_000) / ticks_per_s.max(1))
}

/// Peak resident memory (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status_kib(&text, "VmHWM").with_context(|| format!("{path} has no VmHWM line"))
}

/// Current resident memory (`VmRSS`) of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status_kib(&text, "VmRSS").with_context(|| format!("{path} has no VmRSS line"))
}

/// Open file descriptors of process `pid`: the entries of `/proc/PID/fd`.
pub fn open_fds(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/fd");
    let dir = std::fs::read_dir(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(dir.flatten().count() as u64)
}

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`). Asked of `getconf` because calling
/// `sysconf` would need `unsafe`, which the workspace forbids; every Linux the project runs on
/// answers 100, which is the fallback.
pub fn clock_ticks_per_s() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// What the report says about the machine it ran on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: parse_cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
            memory_bytes: parse_status_kib(&read("/proc/meminfo"), "MemTotal").unwrap_or(0),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tokio-runtime-w) S 1 4242 4242 0 -1 4194560 1525 0 0 0 \
                        731 129 0 0 20 0 3 0 123456 912345678 4321 18446744073709551615 \
                        1 1 0 0 0 0 0 4096 17630 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn cpu_ticks_are_utime_plus_stime() {
        assert_eq!(parse_stat_cpu_ticks(STAT), Some(731 + 129));
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let odd = STAT.replace("(tokio-runtime-w)", "(a) b (c d)");
        assert_eq!(parse_stat_cpu_ticks(&odd), Some(860));
    }

    #[test]
    fn the_command_name_is_the_text_in_the_outer_parentheses() {
        assert_eq!(parse_stat_comm(STAT), Some("tokio-runtime-w"));
        assert_eq!(parse_stat_comm("7 (a) b (c)) S 1"), Some("a) b (c)"));
        assert_eq!(parse_stat_comm("7 postgres S"), None);
    }

    #[test]
    fn truncated_or_garbled_stat_is_none() {
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2 3"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis at all"), None);
        assert_eq!(
            parse_stat_cpu_ticks(&STAT.replace(" 731 ", " x ")),
            None,
            "a non-number in utime"
        );
    }

    #[test]
    fn peak_and_current_resident_memory_in_bytes() {
        let status = "Name:\ttillgate\nVmPeak:\t  300000 kB\nVmHWM:\t   51234 kB\n\
                      VmRSS:\t   40960 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(51_234 * 1024));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(40 * 1024 * 1024));
        assert_eq!(parse_status_kib(status, "Threads"), None, "not a kB line");
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // A key that is a prefix of another must not match it.
        assert_eq!(parse_status_kib("VmHWMx:\t1 kB\n", "VmHWM"), None);
    }

    #[test]
    fn memory_total_of_meminfo() {
        let meminfo = "MemTotal:       24589312 kB\nMemFree:        22000000 kB\n";
        assert_eq!(
            parse_status_kib(meminfo, "MemTotal"),
            Some(24_589_312 * 1024)
        );
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(
            parse_machine_busy_ticks(stat),
            Some(100 + 5 + 50 + 3 + 2 + 1)
        );
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_machine_busy_ticks("cpu  1 x 3 4\n"), None);
        assert!(machine_busy_ns(100).unwrap() > 0);
    }

    #[test]
    fn cpu_model_is_the_first_model_name() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) \
                    Processor\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            parse_cpu_model(info).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(parse_cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn this_process_has_a_readable_stat_and_status() {
        let pid = std::process::id();
        assert!(cpu_ns(pid, 100).is_ok());
        assert!(peak_rss_bytes(pid).unwrap() > 0);
        assert!(rss_bytes(pid).unwrap() > 0);
    }

    #[test]
    fn open_descriptors_of_this_process_are_counted() {
        let pid = std::process::id();
        let before = open_fds(pid).unwrap();
        assert!(before >= 3, "stdin, stdout and stderr at least");
        let file = std::fs::File::open("/proc/self/status").unwrap();
        // Other tests' threads open files too; this one at least is counted.
        assert!(open_fds(pid).unwrap() >= 1);
        drop(file);
        assert!(open_fds(u32::MAX).is_err());
    }
}
