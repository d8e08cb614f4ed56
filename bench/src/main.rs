//! `gocommerce-bench`: starts `gocommerce all` on loopback against the local
//! PostgreSQL and RabbitMQ, seeds it through the REST API, runs every
//! scenario next to its baseline, and writes `<out>/<date>.json` and
//! `<out>/<date>.md`. Figures are reported, never judged: the exit status
//! only says whether every scenario could run. With `--instructions` it
//! counts what a product view (with and without a token) and an order cost
//! in instructions instead (see `instructions`).

mod baseline;
mod cpu;
mod instructions;
mod load;
mod machine;
mod mix;
mod report;
mod runs;
mod scenarios;
mod schedule;
mod seed;
mod server;
mod smtp;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::report::{Report, SeedSizes};
use crate::scenarios::{Context, Maxima, Scenario, Settings};
use crate::seed::Sizes;
use crate::server::{Gocommerce, Launch, Postgres, ProductCache};

#[derive(Debug, Parser)]
#[command(about = "Benchmark gocommerce against same-run baselines")]
struct Args {
    /// The `gocommerce` binary to start (`all`).
    #[arg(long, required_unless_present = "runs")]
    gocommerce: Option<PathBuf>,
    /// Instead of a run, print the table of every full run among the JSON
    /// reports in this directory (bench/RUNS.md).
    #[arg(long, conflicts_with_all = ["quick", "only", "instructions"])]
    runs: Option<PathBuf>,
    /// A smoke run: a small catalog and half-second measurements.
    #[arg(long)]
    quick: bool,
    /// Where `<date>.json` and `<date>.md` are written.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// The repository root (migrations and bench/sql are read from it).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    #[arg(long, default_value = "/usr/bin/pgbench")]
    pgbench: PathBuf,
    /// Connections of the load generator and of pgbench; 16 by default, 8 quick.
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, default_value = "127.0.0.1")]
    pg_host: String,
    #[arg(long, default_value_t = 5432)]
    pg_port: u16,
    #[arg(long, default_value = "postgres")]
    pg_user: String,
    /// Label of the build in the report (debug or release).
    #[arg(long, default_value = "unknown")]
    build: String,
    /// Run only these scenarios (e.g. `--only 1,2`); 6 and 7 also need 1 to 4
    /// for the predicted rate, and 4's catalog reads beside logins need 2 for
    /// their rate (without it they are reported as not measured). All by
    /// default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    /// Instead of the scenarios, count the user-space instructions a product
    /// view (with and without a token) and an order cost under valgrind's
    /// callgrind, by component (bench/README.md).
    #[arg(long, conflicts_with_all = ["quick", "only"])]
    instructions: bool,
    /// With --instructions: the product views counted of each kind (after a
    /// warm-up).
    #[arg(long, default_value_t = 4000, requires = "instructions")]
    requests: usize,
    /// With --instructions: the orders counted (after a warm-up).
    #[arg(long, default_value_t = 200, requires = "instructions")]
    orders: usize,
    /// With --instructions: keep callgrind's files in this directory.
    #[arg(long, requires = "instructions")]
    keep_dumps: Option<PathBuf>,
}

impl Args {
    fn wants(&self, scenario: u32) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }
}

fn progress(message: &str) {
    eprintln!(
        "[bench {}] {message}",
        chrono::Utc::now().format("%H:%M:%S")
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.runs {
        use std::io::Write as _;
        std::io::stdout().write_all(runs::table(dir)?.as_bytes())?;
        return Ok(());
    }
    let gocommerce = args
        .gocommerce
        .clone()
        .context("--gocommerce is required")?;
    let (sizes, settings) = if args.quick {
        (
            Sizes {
                categories: 5,
                products: 200,
                customers: 12,
                active: 6,
            },
            Settings {
                concurrency: args.concurrency.unwrap_or(8),
                warmup: Duration::ZERO,
                measure: Duration::from_millis(500),
                pgbench_seconds: 1,
                saturation_pairs: 1,
                mix_steps: vec![0.25],
                mix_refinements: 1,
                mix_min_checkouts: 0,
                idle_settle: Duration::ZERO,
            },
        )
    } else {
        (
            Sizes {
                categories: 50,
                products: 10_000,
                customers: 1_000,
                active: 100,
            },
            Settings {
                concurrency: args.concurrency.unwrap_or(16),
                warmup: Duration::from_secs(2),
                measure: Duration::from_secs(10),
                pgbench_seconds: 10,
                saturation_pairs: 3,
                mix_steps: vec![0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.15],
                mix_refinements: 2,
                mix_min_checkouts: 200,
                idle_settle: Duration::from_secs(30),
            },
        )
    };
    let postgres = Postgres {
        host: args.pg_host.clone(),
        port: args.pg_port,
        user: args.pg_user.clone(),
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let started_at = chrono::Utc::now();
    progress(&format!("starting {} all", gocommerce.display()));
    let sink = std::sync::Arc::new(smtp::SmtpSink::start().await?);
    let smtp_url = format!("smtp://127.0.0.1:{}", sink.port);
    let launch = Launch::new(&gocommerce, &postgres, &run_id, &smtp_url)?;
    if args.instructions {
        let counts = instructions::Counts {
            views: args.requests,
            orders: args.orders,
        };
        return instructions::run(launch, &sink, counts, args.keep_dumps.as_deref()).await;
    }
    // Scenario 2 asks for the database path: the first phase runs with the
    // product cache off, the second (scenarios 1, 6, 7) as deployed.
    let mut server = Gocommerce::start(&launch, ProductCache::Off).await?;
    server::quiesce(server.pid, Duration::from_secs(10)).await;
    let memory_start = server.memory();
    let outcome = run(
        &args,
        &mut server,
        sink,
        (sizes, settings.clone()),
        &run_id,
        started_at,
        memory_start,
    )
    .await;
    progress("stopping gocommerce and dropping its databases");
    let stopped = server.stop().await;
    let report = outcome?;
    stopped?;

    std::fs::create_dir_all(&args.out_dir)?;
    let stem = started_at.format("%Y-%m-%dT%H-%M-%SZ").to_string();
    let json_path = args.out_dir.join(format!("{stem}.json"));
    let md_path = args.out_dir.join(format!("{stem}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let markdown = report::markdown(&report);
    std::fs::write(&md_path, &markdown)?;
    progress(&format!(
        "wrote {} and {}",
        json_path.display(),
        md_path.display()
    ));
    if !report.failures.is_empty() {
        anyhow::bail!(
            "{} scenario(s) could not run: {}",
            report.failures.len(),
            report.failures.join("; ")
        );
    }
    Ok(())
}

async fn run(
    args: &Args,
    server: &mut Gocommerce,
    sink: std::sync::Arc<smtp::SmtpSink>,
    (sizes, settings): (Sizes, Settings),
    run_id: &str,
    started_at: chrono::DateTime<chrono::Utc>,
    memory_start: server::Memory,
) -> anyhow::Result<Report> {
    // Read before the scenarios: the setting they ran under is what counts.
    let machine = machine::Machine::read();
    let postgres = server.postgres().clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(30))
        .build()?;
    progress(&format!(
        "seeding {} products in {} categories, {} customers",
        sizes.products, sizes.categories, sizes.customers
    ));
    let seeded = seed::seed(&client, &server.base, sizes)
        .await
        .context("seeding failed")?;
    server::quiesce(server.pid, Duration::from_secs(20)).await;
    let memory_idle = server.memory();
    // Idle for a while, as a shop is at night: the hashing workers free their
    // memory after ten seconds without a login, and the allocator hands freed
    // pages back to the kernel over the following ten.
    tokio::time::sleep(settings.idle_settle).await;
    let memory_settled = server.memory();
    let mut cx = Context {
        client,
        base: server.base.clone(),
        seeded,
        settings: settings.clone(),
        postgres: postgres.clone(),
        pgbench: args.pgbench.clone(),
        sql_dir: args.repo.join("bench").join("sql"),
        server_pid: server.pid,
        paid: std::sync::Arc::default(),
        smtp: sink,
    };
    progress(&scenarios::describe(server));
    let mut attempts = Attempts {
        server_pid: server.pid,
        settle_limit: Duration::from_secs(if args.quick { 5 } else { 20 }),
        failures: Vec::new(),
    };
    let mut done: Vec<Scenario> = Vec::new();
    let mut maxima = Maxima {
        product_view: 0.0,
        search: 0.0,
        login: 0.0,
        checkout: 0.0,
    };

    if args.wants(2) {
        let product_db = server
            .database("product")
            .context("no product database")?
            .to_owned();
        let run = scenarios::catalog_read(&cx, &product_db);
        let about = "catalog reads against pgbench (product cache off)";
        if let Some(list) = attempts.run("2 catalog read", about, run).await {
            maxima.search = saturation(&list[1]);
            done.extend(list);
        }
    }
    if args.wants(3) {
        let run = scenarios::order_placement(&cx, run_id, &args.repo);
        let about = "order placement against pgbench";
        if let Some(s) = attempts.run("3 order placement", about, run).await {
            maxima.checkout = saturation(&s);
            done.push(s);
        }
    }
    if args.wants(4) {
        let view_max = done.iter().find(|s| s.id == 2).map_or(0.0, saturation);
        let run = scenarios::login(&cx, view_max);
        if let Some(s) = attempts.run("4 login", "login against Argon2id", run).await {
            maxima.login = saturation(&s);
            done.push(s);
        }
    }
    if args.wants(5) {
        let run = scenarios::token_verification(&cx);
        let about = "token verification";
        if let Some(s) = attempts.run("5 token verification", about, run).await {
            done.push(s);
        }
    }

    progress("restarting gocommerce with the product cache on");
    server.restart(ProductCache::On).await?;
    cx.server_pid = server.pid;
    attempts.server_pid = server.pid;
    progress(&scenarios::describe(server));
    if args.wants(1) {
        let run = scenarios::proxy_cost(&cx);
        let about = "proxy cost (product cache on)";
        if let Some(s) = attempts.run("1 proxy cost", about, run).await {
            maxima.product_view = saturation(&s);
            done.push(s);
        }
    }
    if args.wants(6) || args.wants(7) {
        let label = "6/7 mixed load";
        if maxima.product_view > 0.0
            && maxima.search > 0.0
            && maxima.login > 0.0
            && maxima.checkout > 0.0
        {
            let run = scenarios::mixed(&cx, maxima, memory_settled);
            let about = "mixed load and memory";
            if let Some((mixed, memory)) = attempts.run(label, about, run).await {
                done.push(mixed);
                done.push(memory);
            }
        } else {
            attempts.failures.push(format!(
                "{label}: needs the maxima of scenarios 1 to 4 (run them too)"
            ));
        }
    }
    let mut failures = attempts.failures;
    done.sort_by_key(|s| s.id);
    // A scenario whose saturation run never succeeded measured nothing:
    // that is a broken harness or server, not a slow one.
    for scenario in &done {
        for level in scenario
            .levels
            .iter()
            .filter(|l| l.load.starts_with("saturation"))
        {
            if level.measured.throughput <= 0.0 {
                failures.push(format!(
                    "{} {}: no request succeeded at {} ({} errors)",
                    scenario.id, scenario.name, level.load, level.measured.errors
                ));
            }
        }
    }
    Ok(Report {
        started_at: started_at.to_rfc3339(),
        mode: if args.quick {
            "quick".to_owned()
        } else {
            "full".to_owned()
        },
        binary: args
            .gocommerce
            .as_deref()
            .map(|path| path.display().to_string())
            .unwrap_or_default(),
        build: args.build.clone(),
        concurrency: settings.concurrency,
        measure_seconds: settings.measure.as_secs_f64(),
        saturation_pairs: settings.saturation_pairs,
        machine,
        seed: SeedSizes {
            categories: sizes.categories,
            products: sizes.products,
            customers: sizes.customers,
            logged_in: cx.seeded.customers.len(),
        },
        memory_start,
        memory_idle,
        memory_settled,
        idle_settle_seconds: settings.idle_settle.as_secs(),
        scenarios: done,
        failures,
    })
}

fn saturation(scenario: &Scenario) -> f64 {
    scenario
        .levels
        .iter()
        .find(|l| l.load == "saturation")
        .map(|l| l.measured.throughput)
        .unwrap_or(0.0)
}

/// Runs scenarios one after another, each once the server has settled. A
/// scenario that cannot run is recorded and the others still run.
struct Attempts {
    server_pid: u32,
    settle_limit: Duration,
    failures: Vec<String>,
}

impl Attempts {
    /// `label` starts with the scenario's number (`"3 order placement"`);
    /// `about` is what the progress line says it does.
    async fn run<T>(
        &mut self,
        label: &str,
        about: &str,
        scenario: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> Option<T> {
        server::quiesce(self.server_pid, self.settle_limit).await;
        let number = label.split(' ').next().unwrap_or(label);
        progress(&format!("scenario {number}: {about}"));
        match scenario.await {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                self.failures.push(format!("{label}: {e:#}"));
                None
            }
        }
    }
}
