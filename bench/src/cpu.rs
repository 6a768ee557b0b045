//! CPU time of a process, from Linux `/proc/<pid>/stat`: user plus system
//! time of all its threads, dead ones included. Elsewhere it is unknown.

use std::process::Command;

/// Clock ticks per second of the `/proc` counters.
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// CPU seconds used so far by `pid` (this process when `None`).
pub fn seconds(pid: Option<u32>, ticks_per_second: f64) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    parse_stat(&text).map(|ticks| ticks as f64 / ticks_per_second)
}

/// utime + stime (fields 14 and 15) in ticks. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_summed() {
        let line =
            "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 731 269 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat(line), Some(1000));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        if cfg!(target_os = "linux") {
            assert!(seconds(None, ticks_per_second()).is_some());
        }
    }
}
