//! `gocommerce-bench --instructions`: the user-space instructions a request
//! costs, by component, counted by valgrind's callgrind.
//!
//! Wall-clock figures on a shared two-core VM move by 10% between runs; the
//! instructions a request costs do not. This starts `gocommerce all` under
//! callgrind the way the benchmark starts it (same environment, seeding and
//! clean-up) and counts, per request and per component's threads: the same
//! `GET /v1/products/{id}` a few thousand times over eight keep-alive
//! connections, with the product cache on (also with a bearer token, as in
//! scenario 5) and then off, a couple of hundred orders of one item until
//! paid and emailed, and a few hundred listings of the customer's newest 20
//! orders (the mixed load's `GET /v1/orders`). The kernel's share (system
//! calls, wake-ups) and PostgreSQL's and RabbitMQ's are not counted: pair it
//! with `make bench` for time.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::seed::{self, Sizes};
use crate::server::{Gocommerce, Launch, ProductCache, SERVICES, checked_output};
use crate::smtp::SmtpSink;

/// Keep-alive connections the views are sent over.
const CONNECTIONS: usize = 8;
/// Views sent before counting, once with instrumentation off (pools,
/// caches, connections) and once with it on (callgrind's own caches).
const WARM_UP: usize = 400;

/// One measurement: a thread's component and its instructions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Thread {
    component: String,
    instructions: u64,
}

/// What to count.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Product views of each kind.
    pub views: usize,
    /// Orders placed until paid and emailed.
    pub orders: usize,
}

/// Counts the views and an order and writes one Markdown table to standard
/// output. `keep_dumps` keeps callgrind's files (for `callgrind_annotate`);
/// otherwise they go to a scratch directory that is removed.
pub async fn run(
    mut launch: Launch,
    sink: &SmtpSink,
    counts: Counts,
    keep_dumps: Option<&Path>,
) -> anyhow::Result<()> {
    if counts.views < CONNECTIONS || counts.orders < ORDER_WORKERS {
        bail!(
            "--requests must be at least {CONNECTIONS} and --orders at least {ORDER_WORKERS} \
             (they are spread evenly over that many connections and workers)"
        );
    }
    let scratch = std::env::temp_dir().join(format!("gocommerce-instructions-{}", launch.run_id));
    let dir = keep_dumps.map_or_else(|| scratch.clone(), Path::to_path_buf);
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    // Under valgrind the services start twenty to fifty times slower.
    launch.ready_within = Duration::from_secs(600);
    // `%p` is the process id: the view from the database runs in a process
    // of its own, whose dumps hold none of the first process's threads.
    let stem = dir.join(format!("callgrind-{}", launch.run_id));
    launch.wrapper = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        "--separate-threads=yes".to_owned(),
        format!("--callgrind-out-file={}-%p", stem.display()),
    ];
    let mut server = Gocommerce::start(&launch, ProductCache::On).await?;
    let outcome = measure(&mut server, sink, counts, &stem).await;
    let stopped = server.stop().await;
    if keep_dumps.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let table = outcome?;
    stopped?;
    let header = format!(
        "{}: user-space instructions per request\n\n\
         | request | component | instructions per request |\n|---|---|---|\n",
        launch.binary.display()
    );
    std::io::stdout().write_all(format!("{header}{table}").as_bytes())?;
    Ok(())
}

/// Seeds one product and one customer, then counts, in the first process
/// (product cache on) cached views without and with the customer's token
/// and orders, and in a second (cache off, the same databases) views from
/// the database. Returns the table's rows.
async fn measure(
    server: &mut Gocommerce,
    sink: &SmtpSink,
    counts: Counts,
    stem: &Path,
) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let sizes = Sizes {
        categories: 1,
        products: 1,
        customers: 1,
        active: 1,
    };
    let seeded = seed::seed(&client, &server.base, sizes).await?;
    let product_id = seeded
        .product_ids
        .first()
        .context("seeding created no product")?;
    let customer = seeded
        .customers
        .first()
        .context("seeding logged in no customer")?;
    let view = format!("{}/v1/products/{product_id}", server.base);
    let mut table = String::new();

    crate::progress(&format!("counting {} cached product views", counts.views));
    let mut meter = Meter::new(server.pid, stem);
    let sent = meter.views(&client, &view, None, counts.views).await?;
    table.push_str(&rows("cached product view", sent, &meter.dump().await?));

    // Scenario 5's difference: the same view with the customer's token.
    crate::progress(&format!(
        "counting {} cached product views with a token",
        counts.views
    ));
    let sent = meter
        .views(&client, &view, Some(&customer.token), counts.views)
        .await?;
    table.push_str(&rows(
        "cached product view with a token",
        sent,
        &meter.dump().await?,
    ));

    let order = Order {
        client: &client,
        base: &server.base,
        customer,
        product_id,
        sink,
    };
    crate::progress(&format!("counting {} orders", counts.orders));
    order.place(ORDER_WARM_UP).await?;
    meter.zero().await?;
    let placed = order.place(counts.orders).await?;
    // The email is the saga's last visible step; the notification's own
    // bookkeeping after it still belongs to the order.
    crate::server::quiesce(server.pid, Duration::from_secs(60)).await;
    table.push_str(&rows(
        "order until paid and emailed",
        placed,
        &meter.dump().await?,
    ));

    // The mixed load's order listing: the customer's newest page, full
    // since the warm-up placed more orders than a page holds.
    // At least one per connection: fewer would send none.
    let listings = (counts.views / 10).max(CONNECTIONS);
    crate::progress(&format!("counting {listings} order listings"));
    let listing = format!("{}/v1/orders", server.base);
    let sent = meter
        .views(&client, &listing, Some(&customer.token), listings)
        .await?;
    table.push_str(&rows(
        "order listing, a page of 20",
        sent,
        &meter.dump().await?,
    ));

    crate::progress("restarting with the product cache off");
    server.restart(ProductCache::Off).await?;
    crate::progress(&format!(
        "counting {} product views from the database",
        counts.views
    ));
    let mut meter = Meter::new(server.pid, stem);
    let sent = meter.views(&client, &view, None, counts.views).await?;
    table.push_str(&rows(
        "product view from the database",
        sent,
        &meter.dump().await?,
    ));
    Ok(table)
}

/// Orders placed before counting (pools, prepared statements, queues); at
/// least a page of the order listing.
const ORDER_WARM_UP: usize = 20;
/// Orders in flight at once.
const ORDER_WORKERS: usize = 4;

/// Places orders of one item for the seeded customer.
struct Order<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    customer: &'a seed::Customer,
    product_id: &'a str,
    sink: &'a SmtpSink,
}

impl Order<'_> {
    /// Places `total` orders, `ORDER_WORKERS` at a time, and waits until
    /// each one's confirmation email has reached the SMTP sink. Returns how
    /// many were placed (a multiple of `ORDER_WORKERS`).
    async fn place(&self, total: usize) -> anyhow::Result<usize> {
        let each = total / ORDER_WORKERS;
        let workers = (0..ORDER_WORKERS).map(|_| async move {
            let mut ids = Vec::with_capacity(each);
            for _ in 0..each {
                ids.push(self.place_one().await?);
            }
            Ok::<_, anyhow::Error>(ids)
        });
        let ids: Vec<String> = futures::future::try_join_all(workers)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while ids.iter().any(|id| self.sink.arrival(id).is_none()) {
            if tokio::time::Instant::now() > deadline {
                let missing = ids.iter().filter(|id| self.sink.arrival(id).is_none());
                bail!(
                    "{} of {} confirmation emails did not arrive within five minutes",
                    missing.count(),
                    ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(ids.len())
    }

    async fn place_one(&self) -> anyhow::Result<String> {
        let response = self
            .client
            .post(format!("{}/v1/orders", self.base))
            .bearer_auth(&self.customer.token)
            .json(&seed::order_body(self.customer, self.product_id))
            .send()
            .await?;
        let order = seed::json_ok(response, "POST /v1/orders").await?;
        order["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("POST /v1/orders answered no id: {order}"))
    }
}

/// callgrind in one process: its switches, and the dumps it writes
/// (`<stem>-<pid>.<dump>-<thread>`).
struct Meter {
    pid: u32,
    prefix: PathBuf,
    dumps: u32,
}

impl Meter {
    fn new(pid: u32, stem: &Path) -> Self {
        Self {
            pid,
            prefix: PathBuf::from(format!("{}-{pid}", stem.display())),
            dumps: 0,
        }
    }

    /// Warms up uninstrumented, switches instrumentation on, warms up
    /// again (callgrind's own caches) and counts `total` views of `url`.
    async fn views(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        token: Option<&str>,
        total: usize,
    ) -> anyhow::Result<usize> {
        views(client, url, token, WARM_UP).await?;
        callgrind_control(self.pid, "--instr=on").await?;
        views(client, url, token, WARM_UP).await?;
        self.zero().await?;
        views(client, url, token, total).await
    }

    async fn zero(&self) -> anyhow::Result<()> {
        callgrind_control(self.pid, "--zero").await
    }

    /// Dumps the counts since the last zero and reads them back.
    async fn dump(&mut self) -> anyhow::Result<Vec<Thread>> {
        callgrind_control(self.pid, "--dump").await?;
        self.dumps += 1;
        let prefix = PathBuf::from(format!("{}.{}-", self.prefix.display(), self.dumps));
        // callgrind writes the files after the command returns, one
        // thread's at a time: wait until a second's poll finds the same
        // complete set.
        let mut previous = Vec::new();
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let threads = per_thread(&prefix)?;
            if !threads.is_empty() && threads == previous {
                return Ok(threads);
            }
            previous = threads;
        }
        bail!("callgrind wrote no complete set of counts within two minutes")
    }
}

/// `total` GETs of `url` over `CONNECTIONS` keep-alive connections, with
/// `token` as the bearer if given; every one must answer 200. Returns how
/// many were sent (a multiple of `CONNECTIONS`).
async fn views(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    total: usize,
) -> anyhow::Result<usize> {
    let each = total / CONNECTIONS;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let client = client.clone();
            let url = url.to_owned();
            let token = token.map(str::to_owned);
            tokio::spawn(async move {
                for _ in 0..each {
                    let mut request = client.get(&url);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await?;
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
    let mut command = Command::new("callgrind_control");
    command.arg(option).arg(pid.to_string());
    checked_output(&mut command, &format!("callgrind_control {option}"))
        .await
        .map(drop)
}

/// The threads that ran any instructions in the files whose path starts
/// with `prefix` (`<stem>-<pid>.<dump>-`), sorted.
fn per_thread(prefix: &Path) -> anyhow::Result<Vec<Thread>> {
    let dir = prefix.parent().context("dump prefix without a directory")?;
    let stem = prefix
        .file_name()
        .context("dump prefix without a name")?
        .to_string_lossy()
        .into_owned();
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
    fn only_the_asked_for_dump_of_the_measured_process_is_read() {
        let dir = std::env::temp_dir().join(format!("gcins-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let product = "fn=(1) gocommerce_product::handler\ntotals: 70000\n";
        // `.1-NN`: the first dump asked for; `.2-NN`: the second; `-NN`:
        // the one written at exit; another process id: the other process.
        for (name, text) in [
            ("callgrind-run-41.1-01", GATEWAY_DUMP),
            ("callgrind-run-41.1-02", product),
            ("callgrind-run-41.1-03", "totals: 0\n"),
            ("callgrind-run-41.2-01", GATEWAY_DUMP),
            ("callgrind-run-41-01", GATEWAY_DUMP),
            ("callgrind-run-42.1-01", GATEWAY_DUMP),
        ] {
            std::fs::write(dir.join(name), text).expect("dump written");
        }

        let threads = per_thread(&dir.join("callgrind-run-41.1-"));
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
