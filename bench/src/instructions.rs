//! `gocommerce-bench --instructions`: the user-space instructions a product
//! view costs, by component, counted by valgrind's callgrind.
//!
//! Wall-clock figures on a shared two-core VM move by 10% between runs; the
//! instructions a request costs do not. This starts `gocommerce all` under
//! callgrind the way the benchmark starts it (same environment, seeding and
//! clean-up), sends the same `GET /v1/products/{id}` a few thousand times
//! over eight keep-alive connections, with the product cache on and then
//! off, and prints what each component's thread spent per request. The
//! kernel's share (system calls, wake-ups) is not counted: pair it with
//! `make bench` for time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::seed::{self, Sizes};
use crate::server::{Gocommerce, Launch, ProductCache, SERVICES};

/// Keep-alive connections the views are sent over.
const CONNECTIONS: usize = 8;
/// Views sent before counting, once with instrumentation off (JIT-like
/// warm-up of pools and caches) and once with it on (callgrind's own).
const WARM_UP: usize = 400;

/// One measurement: a thread's component and its instructions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Thread {
    component: String,
    instructions: u64,
}

/// Counts both views and writes one Markdown table to standard output. `keep_dumps` keeps
/// callgrind's files (for `callgrind_annotate`); otherwise they go to a
/// scratch directory that is removed.
pub async fn run(
    mut launch: Launch,
    requests: usize,
    keep_dumps: Option<&Path>,
) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("gocommerce-instructions-{}", launch.run_id));
    let dir = keep_dumps.map_or_else(|| scratch.clone(), Path::to_path_buf);
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    let mut table = format!(
        "{}: user-space instructions per GET /v1/products/{{id}}\n\
         | view | component | instructions per request |\n|---|---|---|\n",
        launch.binary.display()
    );
    // Under valgrind the services start twenty to fifty times slower.
    launch.ready_within = Duration::from_secs(600);
    // `%p` is the process id: each view runs in a process of its own, so
    // one view's dumps hold none of the other's threads.
    let stem = format!("callgrind-{}", launch.run_id);
    launch.wrapper = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        "--separate-threads=yes".to_owned(),
        format!("--callgrind-out-file={}/{stem}-%p", dir.display()),
    ];
    let mut server = Gocommerce::start(&launch, ProductCache::On).await?;
    let mut path = None;
    let mut outcome = Ok(());
    for (view, cache) in [
        ("cached", ProductCache::On),
        ("from the database", ProductCache::Off),
    ] {
        if server.cache != cache
            && let Err(e) = server.restart(cache).await
        {
            outcome = Err(e);
            break;
        }
        let prefix = dir.join(format!("{stem}-{}", server.pid));
        match measure(&server, &mut path, requests, &prefix).await {
            Ok((sent, threads)) => table.push_str(&rows(view, sent, &threads)),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let stopped = server.stop().await;
    if keep_dumps.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    outcome.and(stopped)?;
    std::io::stdout().write_all(table.as_bytes())?;
    Ok(())
}

/// Creates the product on the first call (the databases outlive a
/// restart), warms up, counts `requests` views and reads the dumps.
async fn measure(
    server: &Gocommerce,
    path: &mut Option<String>,
    requests: usize,
    prefix: &Path,
) -> anyhow::Result<(usize, Vec<Thread>)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let path = match path {
        Some(path) => path.clone(),
        None => {
            let sizes = Sizes {
                categories: 1,
                products: 1,
                customers: 0,
                active: 0,
            };
            let seeded = seed::seed(&client, &server.base, sizes).await?;
            let id = seeded
                .product_ids
                .first()
                .context("seeding created no product")?;
            path.insert(format!("/v1/products/{id}")).clone()
        }
    };
    let url = format!("{}{path}", server.base);
    views(&client, &url, WARM_UP).await?;
    callgrind_control(server.pid, "--instr=on").await?;
    views(&client, &url, WARM_UP).await?;
    callgrind_control(server.pid, "--zero").await?;
    let sent = views(&client, &url, requests).await?;
    callgrind_control(server.pid, "--dump").await?;
    // callgrind writes the files after the command returns, one thread's at
    // a time: wait until a second's poll finds the same complete set.
    let mut previous = Vec::new();
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let threads = per_thread(prefix)?;
        if !threads.is_empty() && threads == previous {
            return Ok((sent, threads));
        }
        previous = threads;
    }
    bail!("callgrind wrote no complete set of counts within two minutes")
}

/// `total` GETs of `url` over `CONNECTIONS` keep-alive connections; every
/// one must answer 200. Returns how many were sent (a multiple of
/// `CONNECTIONS`).
async fn views(client: &reqwest::Client, url: &str, total: usize) -> anyhow::Result<usize> {
    let each = total / CONNECTIONS;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let client = client.clone();
            let url = url.to_owned();
            tokio::spawn(async move {
                for _ in 0..each {
                    let response = client.get(&url).send().await?;
                    let status = response.status();
                    response.bytes().await?;
                    if status != reqwest::StatusCode::OK {
                        bail!("GET {url} answered {status}");
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(each * CONNECTIONS)
}

async fn callgrind_control(pid: u32, option: &str) -> anyhow::Result<()> {
    let output = Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .output()
        .await
        .context("callgrind_control could not be started (is valgrind installed?)")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {option} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The threads that ran any instructions in the dumps `<prefix>.*`, sorted.
fn per_thread(prefix: &Path) -> anyhow::Result<Vec<Thread>> {
    let dir = prefix.parent().context("dump prefix without a directory")?;
    let stem = format!(
        "{}.",
        prefix
            .file_name()
            .context("dump prefix without a name")?
            .to_string_lossy()
    );
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(&stem) {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        if let Some(thread) = attribute(&String::from_utf8_lossy(&bytes)) {
            threads.push(thread);
        }
    }
    threads.sort();
    Ok(threads)
}

/// The component and instructions of one thread's dump, None when it ran
/// none (or the file is still being written). callgrind numbers threads, it
/// does not name them: a thread belongs to the component whose crate's
/// functions its dump names most (the platform crate is shared by all).
fn attribute(dump: &str) -> Option<Thread> {
    let instructions: u64 = dump
        .lines()
        .find_map(|line| line.strip_prefix("totals:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    if instructions == 0 {
        return None;
    }
    let component = std::iter::once("gateway")
        .chain(SERVICES)
        .map(|c| (dump.matches(&format!("gocommerce_{c}::")).count(), c))
        .filter(|(seen, _)| *seen > 0)
        .max()
        .map_or("other", |(_, c)| c);
    Some(Thread {
        component: component.to_owned(),
        instructions,
    })
}

/// Sums the threads by component; components under 100 instructions a
/// request are left out of the rows, not of the total.
fn per_component(sent: usize, threads: &[Thread]) -> (Vec<(String, f64)>, f64) {
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for thread in threads {
        *sums.entry(&thread.component).or_default() += thread.instructions;
    }
    let per_request = |n: u64| n as f64 / sent.max(1) as f64;
    let total = per_request(sums.values().sum());
    let mut rows: Vec<(String, f64)> = sums
        .into_iter()
        .map(|(c, n)| (c.to_owned(), per_request(n)))
        .filter(|(_, n)| *n >= 100.0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    (rows, total)
}

/// The table's rows of one view.
fn rows(view: &str, sent: usize, threads: &[Thread]) -> String {
    let (rows, total) = per_component(sent, threads);
    let mut out = String::new();
    for (component, per_request) in rows {
        out.push_str(&format!(
            "| {view} | {component} | {} |\n",
            thousands(per_request)
        ));
    }
    out.push_str(&format!("| {view} | all | {} |\n", thousands(total)));
    out
}

/// `161432.4` as `161,432`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY_DUMP: &str = "version: 1\ncreator: callgrind-3.22.0\n\
        positions: line\nevents: Ir\n\
        fn=(1) gocommerce_gateway::routes::product\n3 10\n\
        cfn=(2) gocommerce_platform::grpc::call\ncalls=1 0\n4 20\n\
        fn=(3) gocommerce_gateway::view::render\n5 30\n\
        fn=(4) gocommerce_product::pb::Product::encode\n6 2\n\
        totals: 160500\n";

    #[test]
    fn a_thread_belongs_to_the_component_whose_functions_its_dump_names_most() {
        let thread = attribute(GATEWAY_DUMP).expect("a thread with instructions");

        assert_eq!(thread.component, "gateway");
        assert_eq!(thread.instructions, 160_500);
    }

    #[test]
    fn a_thread_that_names_no_component_is_other_and_an_idle_one_is_left_out() {
        let runtime = "events: Ir\nfn=(1) tokio::runtime::park\n3 9\ntotals: 900\n";
        let idle = "events: Ir\ntotals: 0\n";
        let unfinished = "events: Ir\nfn=(1) tokio::runtime::park\n";

        assert_eq!(
            attribute(runtime).map(|t| t.component).as_deref(),
            Some("other")
        );
        assert_eq!(attribute(idle), None);
        assert_eq!(attribute(unfinished), None);
    }

    #[test]
    fn only_the_explicit_dumps_of_the_measured_process_are_read() {
        let dir = std::env::temp_dir().join(format!("gcins-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let product = "fn=(1) gocommerce_product::handler\ntotals: 70000\n";
        // `.1-NN`: the dump asked for; `-NN`: the one written at exit;
        // another process id: the other view's run.
        for (name, text) in [
            ("callgrind-run-41.1-01", GATEWAY_DUMP),
            ("callgrind-run-41.1-02", product),
            ("callgrind-run-41.1-03", "totals: 0\n"),
            ("callgrind-run-41-01", GATEWAY_DUMP),
            ("callgrind-run-42.1-01", GATEWAY_DUMP),
        ] {
            std::fs::write(dir.join(name), text).expect("dump written");
        }

        let threads = per_thread(&dir.join("callgrind-run-41"));
        let _ = std::fs::remove_dir_all(&dir);

        let components: Vec<_> = threads
            .expect("dumps read")
            .into_iter()
            .map(|t| (t.component, t.instructions))
            .collect();
        assert_eq!(
            components,
            vec![
                ("gateway".to_owned(), 160_500),
                ("product".to_owned(), 70_000)
            ]
        );
    }

    #[test]
    fn threads_are_summed_per_component_and_divided_by_the_requests_sent() {
        let thread = |component: &str, instructions| Thread {
            component: component.to_owned(),
            instructions,
        };
        let threads = [
            thread("gateway", 600_000),
            thread("gateway", 400_000),
            thread("product", 500_000),
            thread("other", 900),
        ];

        let (rows, total) = per_component(10, &threads);

        assert_eq!(
            rows,
            vec![
                ("gateway".to_owned(), 100_000.0),
                ("product".to_owned(), 50_000.0)
            ]
        );
        assert_eq!(total, 150_090.0);
    }

    #[test]
    fn counts_are_printed_with_thousands_separators() {
        assert_eq!(thousands(161_432.4), "161,432");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(42.0), "42");
    }
}
