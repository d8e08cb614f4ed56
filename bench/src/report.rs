//! The results of a run as JSON (every figure) and as a Markdown summary.

use serde::Serialize;

use crate::machine::Machine;
use crate::scenarios::{Level, Scenario};
use crate::server::Memory;
use crate::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: String,
    pub mode: String,
    pub binary: String,
    pub build: String,
    pub concurrency: usize,
    pub measure_seconds: f64,
    /// Alternated measurements at saturation (see `Saturation::median_of`).
    pub saturation_pairs: usize,
    pub machine: Machine,
    pub seed: SeedSizes,
    /// Just started, databases empty.
    pub memory_start: Memory,
    /// After seeding, once the process is idle again.
    pub memory_idle: Memory,
    /// After `idle_settle_seconds` more without requests.
    pub memory_settled: Memory,
    pub idle_settle_seconds: u64,
    pub scenarios: Vec<Scenario>,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SeedSizes {
    pub categories: usize,
    pub products: usize,
    pub customers: usize,
    pub logged_in: usize,
}

fn num(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "n/a".to_owned(),
    }
}

fn row(level: &Level) -> String {
    let m = &level.measured;
    let b = level.baseline.as_ref();
    format!(
        "| {} | {} | {:.1} | {:.2} / {:.2} / {:.2} / {:.2} | {} | {} | {} | {} | {} |",
        level.load,
        num(level.rate, 1),
        m.throughput,
        m.p50_ms,
        m.p90_ms,
        m.p99_ms,
        m.max_ms,
        m.errors_by_kind(),
        num(b.map(|b| b.throughput), 1),
        b.map(|b| format!("{:.2} / {:.2}", b.p50_ms, b.p99_ms))
            .unwrap_or_else(|| "n/a".to_owned()),
        with_range(level.throughput_ratio, &level.pair_ratios),
        with_range(level.p99_ratio, &level.pair_p99_ratios),
    )
}

/// The ratio, followed by the range of every pair's when several were run.
fn with_range(ratio: Option<f64>, pair_ratios: &[f64]) -> String {
    let ratio = num(ratio, 2);
    let low = pair_ratios.iter().copied().reduce(f64::min);
    let high = pair_ratios.iter().copied().reduce(f64::max);
    match (low, high) {
        (Some(low), Some(high)) => format!("{ratio} ({low:.2}–{high:.2})"),
        _ => ratio,
    }
}

/// A row of the CPU table for one side of a level, if it was sampled.
fn cpu_row(load: &str, side: &str, summary: &Summary) -> Option<String> {
    let cpu = summary.cpu.as_ref()?;
    let components: Vec<String> = cpu
        .components
        .iter()
        .take(3)
        .map(|(name, us)| format!("{name} {us:.0}"))
        .collect();
    Some(format!(
        "| {load} | {side} | {:.0} ({:.0}%) | {:.0} | {} | {:.0} | {:.0} | {:.0} |",
        cpu.machine_us,
        cpu.machine_busy * 100.0,
        cpu.gocommerce_us,
        if components.is_empty() {
            "n/a".to_owned()
        } else {
            components.join(", ")
        },
        cpu.bench_us,
        cpu.postgres_us,
        cpu.rabbitmq_us,
    ))
}

/// The CPU table of a scenario: both sides of every level that was sampled.
fn cpu_table(levels: &[Level]) -> Option<String> {
    let rows: Vec<String> = levels
        .iter()
        .flat_map(|level| {
            [
                cpu_row(&level.load, "gocommerce", &level.measured),
                level
                    .baseline
                    .as_ref()
                    .and_then(|b| cpu_row(&level.load, "baseline", b)),
            ]
        })
        .flatten()
        .collect();
    if rows.is_empty() {
        return None;
    }
    let mut out = String::from(
        "CPU per request in µs, from /proc over each measurement (the machine's busy share in \
         brackets); gocommerce's largest components; bench is this process (the load \
         generator, and the baseline's bare handler or pgbench):\n\n\
         | load | side | machine | gocommerce | of which | bench | PostgreSQL | RabbitMQ |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    out.push('\n');
    Some(out)
}

/// The Markdown summary: one table per scenario, then its targets.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# GoCommerce benchmark, {}\n\n",
        report.started_at
    ));
    out.push_str(&format!(
        "Mode **{}**, {} build of `{}`, {}, concurrency {}, {:.1} s per measurement. \
         Seeded {} products in {} categories, {} customers ({} logged in). \
         Every ratio is gocommerce ÷ its baseline in this same run; targets are reported, never enforced.\n\n",
        report.mode, report.build, report.binary, report.machine.describe(), report.concurrency,
        report.measure_seconds, report.seed.products, report.seed.categories,
        report.seed.customers, report.seed.logged_in,
    ));
    if report.saturation_pairs > 1 {
        out.push_str(&format!(
            "At saturation, the baseline and gocommerce are measured in turn {} times; a table \
             shows the pair with the median throughput ratio, and in brackets the range of all \
             the pairs' ratios.\n\n",
            report.saturation_pairs
        ));
    }
    out.push_str(&format!(
        "Idle memory: VmRSS {:.1} MiB just started, {:.1} MiB as soon as seeding was over, \
         {:.1} MiB after {} s more without requests (VmHWM {:.1} MiB).\n\n",
        report.memory_start.rss_mib,
        report.memory_idle.rss_mib,
        report.memory_settled.rss_mib,
        report.idle_settle_seconds,
        report.memory_settled.hwm_mib
    ));
    for scenario in &report.scenarios {
        out.push_str(&format!(
            "## {}. {}\n\nBaseline: {}.\n\n",
            scenario.id, scenario.name, scenario.baseline
        ));
        for note in &scenario.notes {
            out.push_str(&format!("- {note}\n"));
        }
        if !scenario.notes.is_empty() {
            out.push('\n');
        }
        if !scenario.levels.is_empty() {
            out.push_str("| load | rate/s | req/s | p50 / p90 / p99 / max ms | errors | baseline req/s | baseline p50 / p99 ms | throughput ratio | p99 ratio |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|\n");
            for level in &scenario.levels {
                out.push_str(&row(level));
                out.push('\n');
            }
            out.push('\n');
        }
        if let Some(table) = cpu_table(&scenario.levels) {
            out.push_str(&table);
        }
        for check in &scenario.checks {
            let verdict = match check.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            out.push_str(&format!(
                "- target {}: {} ({})\n",
                check.target,
                num(check.value, 2),
                verdict
            ));
        }
        out.push('\n');
    }
    if !report.failures.is_empty() {
        out.push_str("## Scenarios that could not run\n\n");
        for failure in &report.failures {
            out.push_str(&format!("- {failure}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;

    fn summary(throughput: f64, p99: f64) -> Summary {
        Summary {
            requests: 10,
            errors: 0,
            failures: Default::default(),
            seconds: 1.0,
            throughput,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: p99,
            max_ms: 9.0,
            cpu: None,
        }
    }

    #[test]
    fn the_summary_shows_each_level_with_its_baseline_and_ratios() {
        let level = Level {
            load: "saturation".to_owned(),
            rate: None,
            measured: summary(500.0, 4.0),
            baseline: Some(summary(1000.0, 2.0)),
            throughput_ratio: Some(0.5),
            p99_ratio: Some(2.0),
            pair_ratios: Vec::new(),
            pair_p99_ratios: Vec::new(),
        };
        let line = row(&level);
        assert!(line.starts_with("| saturation | n/a | 500.0 |"), "{line}");
        assert!(
            line.ends_with("| 1000.0 | 1.00 / 2.00 | 0.50 | 2.00 |"),
            "{line}"
        );
    }

    #[test]
    fn a_level_with_errors_says_what_they_were() {
        let level = Level {
            load: "90%".to_owned(),
            rate: Some(900.0),
            measured: Summary {
                errors: 69,
                failures: [("unsent".to_owned(), 66), ("503".to_owned(), 3)].into(),
                ..summary(800.0, 4.0)
            },
            baseline: None,
            throughput_ratio: None,
            p99_ratio: None,
            pair_ratios: Vec::new(),
            pair_p99_ratios: Vec::new(),
        };

        let line = row(&level);

        assert!(line.contains("| 69 (503: 3, unsent 66) |"), "{line}");
    }

    #[test]
    fn a_saturation_level_of_several_pairs_shows_the_range_of_their_ratios() {
        let level = Level {
            load: "saturation".to_owned(),
            rate: None,
            measured: summary(400.0, 4.0),
            baseline: Some(summary(1000.0, 2.0)),
            throughput_ratio: Some(0.4),
            p99_ratio: Some(2.0),
            pair_ratios: vec![0.5, 0.25, 0.4],
            pair_p99_ratios: Vec::new(),
        };

        let line = row(&level);

        assert!(line.ends_with("| 0.40 (0.25–0.50) | 2.00 |"), "{line}");
    }

    #[test]
    fn a_level_of_several_interference_pairs_shows_the_range_of_their_p99_ratios() {
        let level = Level {
            load: "catalog reads".to_owned(),
            rate: Some(500.0),
            measured: summary(500.0, 15.0),
            baseline: Some(summary(500.0, 5.0)),
            throughput_ratio: Some(1.0),
            p99_ratio: Some(3.0),
            pair_ratios: Vec::new(),
            pair_p99_ratios: vec![8.0, 1.5, 3.0],
        };

        let line = row(&level);

        assert!(line.ends_with("| 1.00 | 3.00 (1.50–8.00) |"), "{line}");
    }

    #[test]
    fn the_cpu_table_shows_each_sampled_side_with_its_largest_components() {
        let cpu = Cpu {
            machine_busy: 0.9,
            machine_us: 350.0,
            gocommerce_us: 180.0,
            components: vec![
                ("gateway".to_owned(), 90.0),
                ("product".to_owned(), 70.0),
                ("order".to_owned(), 15.0),
                ("exited".to_owned(), 5.0),
            ],
            bench_us: 86.0,
            postgres_us: 70.4,
            rabbitmq_us: 1.0,
        };
        let sampled = Level {
            load: "50%".to_owned(),
            rate: Some(4000.0),
            measured: Summary {
                cpu: Some(cpu),
                ..summary(4000.0, 6.0)
            },
            baseline: Some(summary(12000.0, 5.0)),
            throughput_ratio: None,
            p99_ratio: None,
            pair_ratios: Vec::new(),
            pair_p99_ratios: Vec::new(),
        };
        let unsampled = Level {
            load: "saturation".to_owned(),
            measured: summary(1.0, 1.0),
            ..sampled.clone()
        };

        let table = cpu_table(&[unsampled.clone(), sampled]);

        let table = table.expect("one side was sampled");
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| 50%")).collect();
        assert_eq!(
            rows,
            vec![
                "| 50% | gocommerce | 350 (90%) | 180 | gateway 90, product 70, order 15 | 86 | 70 | 1 |"
            ]
        );
        assert!(!table.contains("| saturation |"), "{table}");
        assert_eq!(cpu_table(&[unsampled]), None);
    }

    #[test]
    fn a_missing_figure_is_shown_as_not_available() {
        assert_eq!(num(None, 2), "n/a");
        assert_eq!(num(Some(f64::NAN), 2), "n/a");
        assert_eq!(num(Some(1.234), 1), "1.2");
    }
}
