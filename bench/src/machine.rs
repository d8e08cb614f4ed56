//! What a run ran on, read from `/proc` for the report: ratios compare only
//! within one machine, and one setting of the kernel changes what scenario
//! 4's interference measures. With autogroup on, every session (PostgreSQL's,
//! the shell's that started the bench) is its own scheduling group, and the
//! hashing threads' idle class only yields at once to threads of their own
//! group: a PostgreSQL backend woken beside a hash can wait for the
//! scheduler's tick (bench/GAPS.md, target 4).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    /// `/proc/cpuinfo`'s first model name.
    pub cpu_model: Option<String>,
    /// The kernel's release (`uname -r`).
    pub kernel: Option<String>,
    /// `kernel.sched_autogroup_enabled`; `None` where the kernel has no autogroup.
    pub autogroup: Option<bool>,
}

impl Machine {
    pub fn read() -> Self {
        let proc = |path: &str| std::fs::read_to_string(path).ok();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: proc("/proc/cpuinfo").as_deref().and_then(cpu_model),
            kernel: proc("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            autogroup: proc("/proc/sys/kernel/sched_autogroup_enabled").map(|s| s.trim() != "0"),
        }
    }

    /// One line for the report: "2 CPUs (AMD EPYC; Linux 6.18.44; autogroup on)".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.cpu_model.clone());
        parts.extend(self.kernel.as_ref().map(|k| format!("Linux {k}")));
        parts.extend(
            self.autogroup
                .map(|on| format!("autogroup {}", if on { "on" } else { "off" })),
        );
        let cpus = format!("{} CPU{}", self.cpus, if self.cpus == 1 { "" } else { "s" });
        if parts.is_empty() {
            cpus
        } else {
            format!("{cpus} ({})", parts.join("; "))
        }
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (key.trim() == "model name" && !value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_model_is_the_first_model_name_in_cpuinfo() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\n\
                       processor\t: 1\nmodel name\t: Other\n";

        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC"));
        assert_eq!(cpu_model("processor\t: 0\nmodel name\t: \n"), None);
    }

    #[test]
    fn the_description_names_what_was_read_and_leaves_out_what_was_not() {
        let machine = Machine {
            cpus: 2,
            cpu_model: Some("AMD EPYC".to_owned()),
            kernel: Some("6.18.44".to_owned()),
            autogroup: Some(true),
        };
        let bare = Machine {
            cpus: 1,
            cpu_model: None,
            kernel: None,
            autogroup: Some(false),
        };

        assert_eq!(
            machine.describe(),
            "2 CPUs (AMD EPYC; Linux 6.18.44; autogroup on)"
        );
        assert_eq!(bare.describe(), "1 CPU (autogroup off)");
    }
}
