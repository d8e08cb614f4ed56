//! CPU time per request, and who spent it: the machine as a whole,
//! gocommerce by component (its threads are named `gc-<component>`), the
//! bench process, PostgreSQL and RabbitMQ. Read from /proc before and after a
//! measurement, so every report carries the profile that explains its
//! latencies: on two shared cores, a request's cost is also its neighbours'.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// Clock ticks a second in /proc (`USER_HZ`, 100 on every Linux build this
/// runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of a /proc/<pid>/stat (or task/<tid>/stat) line used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command (process) or thread name, at most 15 bytes.
    pub comm: String,
    pub utime: u64,
    pub stime: u64,
    /// CPU of the children this one has waited for.
    pub cutime: u64,
    pub cstime: u64,
}

impl Stat {
    /// Parses a stat line. The name sits in parentheses and may itself hold
    /// spaces and parentheses, so the fields are counted after the last `)`.
    pub fn parse(text: &str) -> Option<Self> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_owned();
        let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
        // After ")" the state is field 3, so utime (field 14) is at index 11.
        let field = |index: usize| fields.get(index)?.parse::<u64>().ok();
        Some(Self {
            comm,
            utime: field(11)?,
            stime: field(12)?,
            cutime: field(13)?,
            cstime: field(14)?,
        })
    }

    /// The stat file at `path` (`/proc/<pid>/stat`, `/proc/thread-self/stat`,
    /// …), None if it cannot be read or parsed (the process is gone).
    pub fn read(path: &str) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// Ticks this process or thread spent itself.
    pub fn own(&self) -> u64 {
        self.utime + self.stime
    }

    /// Ticks it spent, with its reaped children's.
    pub fn with_children(&self) -> u64 {
        self.own() + self.cutime + self.cstime
    }
}

/// Busy and total ticks of all cores from the `cpu` line of /proc/stat.
/// Busy leaves out idle, I/O wait and steal (another guest's time on a VM);
/// guest time is already inside user time.
pub fn parse_machine(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    let (user, nice, system, idle, iowait, irq, softirq, steal) =
        (at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
    let busy = user + nice + system + irq + softirq;
    Some((busy, busy + idle + iowait + steal))
}

/// The component a gocommerce thread works for: `gc-product` → `product`,
/// `argon2-3` → `argon2`; other names are kept as they are.
pub fn component(thread: &str) -> &str {
    let name = thread.strip_prefix("gc-").unwrap_or(thread);
    match name.rsplit_once('-') {
        Some((base, n)) if !base.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// Cumulative CPU ticks at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub machine_busy: u64,
    pub machine_total: u64,
    /// The gocommerce process, every thread that ever ran in it included.
    pub gocommerce: u64,
    /// gocommerce's live threads by thread id: (name, ticks).
    pub threads: BTreeMap<u32, (String, u64)>,
    /// This process, with the children it reaped (pgbench).
    pub bench: u64,
    /// Every `postgres` process, with the children it reaped: a backend
    /// that exits moves its ticks into the postmaster's.
    pub postgres: u64,
    /// RabbitMQ's Erlang VM.
    pub rabbitmq: u64,
}

impl Snapshot {
    /// Reads /proc now. Whatever cannot be read counts as zero: a snapshot
    /// is a report's detail, never a reason to fail a run. It reads a stat
    /// file per process and per gocommerce thread, blocking, so it is taken
    /// just before and just after a measurement, never during one.
    pub fn take(gocommerce_pid: u32) -> Self {
        let (machine_busy, machine_total) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_machine(&t))
            .unwrap_or_default();
        let mut snapshot = Self {
            machine_busy,
            machine_total,
            gocommerce: Stat::read(&format!("/proc/{gocommerce_pid}/stat")).map_or(0, |s| s.own()),
            bench: Stat::read("/proc/self/stat").map_or(0, |s| s.with_children()),
            ..Self::default()
        };
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{gocommerce_pid}/task")) {
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                if let Some(s) = Stat::read(&format!("/proc/{gocommerce_pid}/task/{tid}/stat")) {
                    let ticks = s.own();
                    snapshot.threads.insert(tid, (s.comm, ticks));
                }
            }
        }
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let Some(pid) = process
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                let Some(s) = Stat::read(&format!("/proc/{pid}/stat")) else {
                    continue;
                };
                if s.comm == "postgres" {
                    snapshot.postgres += s.with_children();
                } else if s.comm.starts_with("beam") {
                    snapshot.rabbitmq += s.own();
                }
            }
        }
        snapshot
    }
}

/// Samples the CPU around a measurement: started before it, read after.
#[derive(Debug)]
pub struct Meter {
    gocommerce_pid: u32,
    before: Snapshot,
}

impl Meter {
    pub fn start(gocommerce_pid: u32) -> Self {
        Self {
            gocommerce_pid,
            before: Snapshot::take(gocommerce_pid),
        }
    }

    /// The CPU spent since the start, per each of `requests`.
    pub fn per_request(&self, requests: u64) -> Option<Cpu> {
        Cpu::between(&self.before, &Snapshot::take(self.gocommerce_pid), requests)
    }

    /// The summary of the measurement just ended, with its CPU per request.
    pub fn stamp(&self, mut summary: Summary) -> Summary {
        summary.cpu = self.per_request(summary.requests);
        summary
    }
}

/// Microseconds of CPU per request over a measurement, by who spent them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// The share of all cores busy over the measurement, 0 to 1.
    pub machine_busy: f64,
    pub machine_us: f64,
    pub gocommerce_us: f64,
    /// gocommerce's by component, most first, those under half a
    /// microsecond left out; threads that ended during the measurement are
    /// under "exited".
    pub components: Vec<(String, f64)>,
    /// The load generator (and the bare handler of scenario 1's baseline,
    /// and pgbench, which it starts).
    pub bench_us: f64,
    pub postgres_us: f64,
    pub rabbitmq_us: f64,
}

impl Cpu {
    /// The CPU between two snapshots spread over `requests`, or None when
    /// there were none.
    pub fn between(before: &Snapshot, after: &Snapshot, requests: u64) -> Option<Self> {
        if requests == 0 {
            return None;
        }
        let per_request =
            |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1_000_000.0 / requests as f64;
        let mut by_component: BTreeMap<&str, u64> = BTreeMap::new();
        for (tid, (name, ticks)) in &after.threads {
            // A thread born during the measurement spent all its ticks in it.
            let earlier = before.threads.get(tid).map_or(0, |(_, t)| *t);
            *by_component.entry(component(name)).or_default() += ticks.saturating_sub(earlier);
        }
        let gocommerce = after.gocommerce.saturating_sub(before.gocommerce);
        let live: u64 = by_component.values().sum();
        let exited = gocommerce.saturating_sub(live);
        if exited > 0 {
            by_component.insert("exited", exited);
        }
        let mut components: Vec<(String, f64)> = by_component
            .into_iter()
            .map(|(name, ticks)| (name.to_owned(), per_request(ticks)))
            // Under half a microsecond a request is idle threads' noise.
            .filter(|(_, us)| *us >= 0.5)
            .collect();
        components.sort_by(|a, b| b.1.total_cmp(&a.1));
        let busy = after.machine_busy.saturating_sub(before.machine_busy);
        let total = after.machine_total.saturating_sub(before.machine_total);
        Some(Self {
            machine_busy: if total > 0 {
                busy as f64 / total as f64
            } else {
                0.0
            },
            machine_us: per_request(busy),
            gocommerce_us: per_request(gocommerce),
            components,
            bench_us: per_request(after.bench.saturating_sub(before.bench)),
            postgres_us: per_request(after.postgres.saturating_sub(before.postgres)),
            rabbitmq_us: per_request(after.rabbitmq.saturating_sub(before.rabbitmq)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_times_even_with_parentheses_in_the_name() {
        let stat =
            "4242 (gc-a (b) c) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1500 250 7 3 20 0 9 0 100 0 0";

        let parsed = Stat::parse(stat);

        assert_eq!(
            parsed,
            Some(Stat {
                comm: "gc-a (b) c".to_owned(),
                utime: 1500,
                stime: 250,
                cutime: 7,
                cstime: 3,
            })
        );
        assert_eq!(parsed.as_ref().map(Stat::own), Some(1750));
        assert_eq!(parsed.as_ref().map(Stat::with_children), Some(1760));
        assert_eq!(Stat::parse("garbage"), None);
    }

    #[test]
    fn the_machine_is_busy_outside_idle_io_wait_and_steal() {
        let stat = "cpu  100 5 20 800 10 1 4 60 0 0\ncpu0 50 2 10 400 5 0 2 30 0 0\n";

        assert_eq!(parse_machine(stat), Some((130, 1000)));
        assert_eq!(parse_machine("intr 1 2 3"), None);
    }

    #[test]
    fn threads_are_grouped_by_the_component_in_their_name() {
        assert_eq!(component("gc-product"), "product");
        assert_eq!(component("gc-notification"), "notification");
        assert_eq!(component("argon2-3"), "argon2");
        assert_eq!(component("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(component("gocommerce"), "gocommerce");
    }

    fn snapshot(machine: (u64, u64), gocommerce: u64, threads: &[(u32, &str, u64)]) -> Snapshot {
        Snapshot {
            machine_busy: machine.0,
            machine_total: machine.1,
            gocommerce,
            threads: threads
                .iter()
                .map(|(tid, name, ticks)| (*tid, ((*name).to_owned(), *ticks)))
                .collect(),
            bench: gocommerce / 2,
            postgres: gocommerce / 4,
            rabbitmq: 0,
        }
    }

    #[test]
    fn cpu_per_request_is_split_by_component_with_threads_born_and_ended_in_between() {
        let before = snapshot(
            (1_000, 10_000),
            400,
            &[
                (1, "gc-gateway", 100),
                (2, "gc-product", 200),
                (5, "gc-user", 0),
                (3, "argon2-0", 100),
            ],
        );
        // 200 ticks = 2 s of CPU over 10,000 requests: 200 µs each. The
        // gateway spent 100 ticks, the product service 40, a new Argon2
        // worker 20, and the old one 20 before it ended (not in `after`);
        // the user service idled.
        let after = snapshot(
            (1_300, 10_400),
            600,
            &[
                (1, "gc-gateway", 200),
                (2, "gc-product", 240),
                (5, "gc-user", 0),
                (4, "argon2-1", 20),
            ],
        );

        let cpu = Cpu::between(&before, &after, 10_000);

        let cpu = cpu.expect("requests were made");
        assert_eq!(cpu.gocommerce_us, 200.0);
        // Most first; ties keep the names' order.
        assert_eq!(
            cpu.components,
            vec![
                ("gateway".to_owned(), 100.0),
                ("exited".to_owned(), 40.0),
                ("product".to_owned(), 40.0),
                ("argon2".to_owned(), 20.0),
            ]
        );
        assert_eq!(cpu.machine_us, 300.0);
        assert!((cpu.machine_busy - 0.75).abs() < 1e-9);
        assert_eq!(cpu.bench_us, 100.0);
        assert_eq!(cpu.postgres_us, 50.0);
        assert_eq!(Cpu::between(&before, &after, 0), None);
    }

    #[test]
    fn a_snapshot_of_this_process_sees_a_busy_thread_under_its_component() {
        let pid = std::process::id();
        let before = Snapshot::take(pid);
        let (spun, spun_rx) = std::sync::mpsc::channel::<()>();
        let (end, end_rx) = std::sync::mpsc::channel::<()>();

        // Spins until it has 15 ticks of CPU (however busy the machine is),
        // then stays alive, so its ticks still belong to it when the second
        // snapshot is taken.
        let spinner = std::thread::Builder::new()
            .name("gc-spin".to_owned())
            .spawn(move || {
                let own = || Stat::read("/proc/thread-self/stat").map_or(0, |s| s.own());
                let mut x = 0u64;
                while own() < 15 {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                let _ = spun.send(());
                let _ = end_rx.recv();
            })
            .expect("spawn a thread");
        spun_rx.recv().expect("the spinner reports");
        let after = Snapshot::take(pid);
        drop(end);
        let _ = spinner.join();

        let cpu = Cpu::between(&before, &after, 1).expect("one request");
        let spin = cpu
            .components
            .iter()
            .find(|(name, _)| name == "spin")
            .map(|(_, us)| *us);
        assert!(
            spin.is_some_and(|us| us >= 150_000.0),
            "spin thread's CPU: {spin:?} in {:?}",
            cpu.components
        );
        assert!(cpu.gocommerce_us >= spin.unwrap_or(0.0));
        assert!(cpu.machine_us > 0.0);
    }
}
