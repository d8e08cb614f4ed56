//! The runs table: one row per full run in a results directory, with the
//! machine it ran on, the baselines' speed and every target's figure, so
//! runs can be compared at a glance (`bench/RUNS.md`, which `make bench`
//! and `make bench-runs` write).

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

/// Which scenario of a report a column reads.
#[derive(Clone, Copy)]
enum Part {
    Scenario(u64),
    /// Scenario 2's lookups by id.
    ById,
    /// Scenario 2's search.
    Search,
}

/// What a column shows of its scenario.
#[derive(Clone, Copy)]
enum Figure {
    /// The value of the scenario's nth check, with ✓ when it was met.
    Check(usize),
    /// The baseline's throughput at saturation, in thousands a second.
    BaselineThousands,
}

struct Column {
    header: &'static str,
    part: Part,
    figure: Figure,
}

const fn column(header: &'static str, part: Part, figure: Figure) -> Column {
    Column {
        header,
        part,
        figure,
    }
}

const COLUMNS: [Column; 16] = [
    column("bare k/s", Part::Scenario(1), Figure::BaselineThousands),
    column("pgbench k/s", Part::ById, Figure::BaselineThousands),
    column("1", Part::Scenario(1), Figure::Check(0)),
    column("1 p99 ×", Part::Scenario(1), Figure::Check(1)),
    column("2 by id", Part::ById, Figure::Check(0)),
    column("by id p99 ms", Part::ById, Figure::Check(1)),
    column("2 search", Part::Search, Figure::Check(0)),
    column("search p99 ms", Part::Search, Figure::Check(1)),
    column("3", Part::Scenario(3), Figure::Check(0)),
    column("4 logins", Part::Scenario(4), Figure::Check(0)),
    column("4 reads ×", Part::Scenario(4), Figure::Check(1)),
    column("5", Part::Scenario(5), Figure::Check(0)),
    column("6", Part::Scenario(6), Figure::Check(0)),
    column("6 lag s", Part::Scenario(6), Figure::Check(1)),
    column("7 idle MiB", Part::Scenario(7), Figure::Check(0)),
    column("7 load MiB", Part::Scenario(7), Figure::Check(1)),
];

const PREAMBLE: &str = "\
# Every full run

Written by `make bench-runs` (and at the end of `make bench`) from the
reports in [results/](results/): one row per full run of every scenario,
oldest first. A figure with ✓ met its target; the targets and how each is
measured are in [README.md](README.md). Ratios compare only within a
machine (`bare k/s` and `pgbench k/s` are the baselines' own saturation
rates, which tell how fast the VM was), and the latency figures (`1 p99 ×`,
the p99s, `4 reads ×`, `6`) of runs before 2026-12-05T14-00-28Z, whose load
generator sent in bursts, do not compare with later ones. Machine and
autogroup are recorded since 2026-12-06T17-44-47Z (`?` before); what each
run measured is in [GAPS.md](GAPS.md) and [HISTORY.md](HISTORY.md).

";

/// The table of every full run among the `*.json` reports in `dir`.
pub fn table(dir: &Path) -> anyhow::Result<String> {
    let mut reports = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let report: Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            reports.push((stem, report));
        }
    }
    reports.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = PREAMBLE.to_owned();
    out.push_str("| run | machine | autogroup |");
    for column in &COLUMNS {
        out.push_str(&format!(" {} |", column.header));
    }
    out.push_str("\n|---|---|---|");
    out.push_str(&"---|".repeat(COLUMNS.len()));
    out.push('\n');
    for (stem, report) in &reports {
        if let Some(row) = row(stem, report) {
            out.push_str(&row);
            out.push('\n');
        }
    }
    Ok(out)
}

/// A report's row, or None unless it is a full run of every scenario.
fn row(stem: &str, report: &Value) -> Option<String> {
    let full = report["mode"] == "full"
        && (1..=7).all(|id| scenario(report, Part::Scenario(id)).is_some())
        && scenario(report, Part::Search).is_some();
    if !full {
        return None;
    }
    let machine = &report["machine"];
    let cpu = machine["cpu_model"]
        .as_str()
        .map_or("?", |model| model.trim_end_matches(" Processor"));
    let autogroup = match machine["autogroup"].as_bool() {
        Some(true) => "on",
        Some(false) => "off",
        None => "?",
    };
    let mut row = format!("| [{stem}](results/{stem}.md) | {cpu} | {autogroup} |");
    for column in &COLUMNS {
        let cell = scenario(report, column.part).map_or_else(
            || "n/a".to_owned(),
            |scenario| figure(scenario, column.figure),
        );
        row.push_str(&format!(" {cell} |"));
    }
    Some(row)
}

fn scenario(report: &Value, part: Part) -> Option<&Value> {
    let scenarios = report["scenarios"].as_array()?;
    scenarios.iter().find(|s| {
        let id = s["id"].as_u64();
        let search = s["name"].as_str().is_some_and(|n| n.contains("?q="));
        match part {
            Part::Scenario(wanted) => id == Some(wanted) && !search,
            Part::ById => id == Some(2) && !search,
            Part::Search => id == Some(2) && search,
        }
    })
}

fn figure(scenario: &Value, figure: Figure) -> String {
    match figure {
        Figure::BaselineThousands => scenario["levels"][0]["baseline"]["throughput"]
            .as_f64()
            .map_or_else(|| "n/a".to_owned(), |rate| format!("{:.1}", rate / 1000.0)),
        Figure::Check(index) => {
            let check = &scenario["checks"][index];
            let Some(value) = check["value"].as_f64() else {
                return "n/a".to_owned();
            };
            // Three significant figures or so: a ratio of 0.849 that missed
            // 0.85 must not read 0.85.
            let digits = match value {
                v if v >= 10.0 => 1,
                v if v >= 1.0 => 2,
                _ => 3,
            };
            let met = if check["met"] == true { " ✓" } else { "" };
            format!("{value:.digits$}{met}")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(value: f64, met: bool) -> Value {
        json!({"target": "t", "value": value, "met": met})
    }

    fn full_report() -> Value {
        let saturation =
            |rate: f64| json!([{"load": "saturation", "baseline": {"throughput": rate}}]);
        json!({
            "mode": "full",
            "machine": {"cpus": 2, "cpu_model": "Intel(R) Xeon(R) Processor", "autogroup": false},
            "scenarios": [
                {"id": 1, "name": "proxy", "levels": saturation(46275.9), "checks": [check(0.39, false), check(1.03, true)]},
                {"id": 2, "name": "catalog read: GET /v1/products/{id}", "levels": saturation(30804.9), "checks": [check(0.4, false), check(30.08, false)]},
                {"id": 2, "name": "catalog read: GET /v1/products?q=<word>", "levels": saturation(1515.2), "checks": [check(0.69, true), check(48.54, false)]},
                {"id": 3, "name": "order", "checks": [check(0.63, true)]},
                {"id": 4, "name": "login", "checks": [check(0.98, true), {"target": "t", "value": null, "met": null}]},
                {"id": 5, "name": "token", "checks": [check(1.01, true)]},
                {"id": 6, "name": "mix", "checks": [check(0.89, true), check(0.11, true)]},
                {"id": 7, "name": "memory", "checks": [check(59.2, true), check(120.0, true)]},
            ],
        })
    }

    #[test]
    fn a_full_run_is_one_row_of_its_machine_and_every_figure() {
        let line = row("2026-12-07T06-48-25Z", &full_report()).expect("a row");

        assert_eq!(
            line,
            "| [2026-12-07T06-48-25Z](results/2026-12-07T06-48-25Z.md) | Intel(R) Xeon(R) | off \
             | 46.3 | 30.8 | 0.390 | 1.03 ✓ | 0.400 | 30.1 | 0.690 ✓ | 48.5 | 0.630 ✓ | 0.980 ✓ | n/a \
             | 1.01 ✓ | 0.890 ✓ | 0.110 ✓ | 59.2 ✓ | 120.0 ✓ |"
        );
    }

    #[test]
    fn a_run_of_some_scenarios_or_a_quick_one_has_no_row() {
        let mut partial = full_report();
        partial["scenarios"]
            .as_array_mut()
            .expect("scenarios")
            .retain(|s| s["id"] != 6);
        let mut quick = full_report();
        quick["mode"] = json!("quick");

        assert!(row("a", &partial).is_none());
        assert!(row("b", &quick).is_none());
    }

    #[test]
    fn a_run_from_before_machines_were_recorded_says_so() {
        let mut old = full_report();
        old.as_object_mut().expect("object").remove("machine");

        let line = row("2026-11-25T04-43-02Z", &old).expect("a row");

        assert!(line.contains("| ? | ? |"), "{line}");
    }

    #[test]
    fn the_table_lists_the_full_runs_of_a_directory_oldest_first() {
        let dir = std::env::temp_dir().join(format!("gocommerce-runs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let write = |name: &str, report: &Value| {
            std::fs::write(dir.join(name), report.to_string()).expect("write");
        };
        write("2026-12-07T02-00-00Z.json", &full_report());
        write("2026-12-06T02-00-00Z.json", &full_report());
        let mut quick = full_report();
        quick["mode"] = json!("quick");
        write("2026-12-08T02-00-00Z.json", &quick);
        std::fs::write(dir.join("2026-12-07T02-00-00Z.md"), "not read").expect("write");

        let table = table(&dir).expect("table");
        std::fs::remove_dir_all(&dir).expect("cleanup");

        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| [")).collect();
        assert_eq!(rows.len(), 2, "{table}");
        assert!(rows[0].starts_with("| [2026-12-06T02-00-00Z]"), "{table}");
        assert!(rows[1].starts_with("| [2026-12-07T02-00-00Z]"), "{table}");
    }
}
