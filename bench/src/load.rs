//! The load generators: open loop (a fixed request rate, latency measured
//! from each request's intended send time) and closed loop (a fixed number of
//! workers sending back to back, which finds the saturation throughput).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinError;
use tokio::time::Instant;

use crate::schedule::Schedule;
use crate::stats::{Failure, Outcome, Recorder, Summary};

/// One request: resolves to whether it succeeded, or how it failed.
pub type Request = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Makes request number `index`, tagged with the class its latency is
/// recorded under (always 0 for a single-kind load).
pub type Op = Arc<dyn Fn(u64) -> (usize, Request) + Send + Sync>;

/// A request that outlives this is an error (and its latency is the limit).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Wraps a one-kind request maker as an `Op` of class 0.
pub fn single<F, Fut>(make: F) -> Op
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(move |i| (0, Box::pin(make(i)) as Request))
}

/// Sends `rate` requests a second for `duration`, each at its scheduled time
/// whether or not earlier ones have answered, with at most `max_in_flight`
/// outstanding (like a fixed pool of connections: a request that has to wait
/// for a free slot is sent late, and its latency still counts from its
/// intended time). Requests still unsent when the window closes are errors,
/// their latency the time they had waited. Returns one recorder per class
/// and the time until the last answer.
pub async fn open_loop(
    op: &Op,
    classes: usize,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> (Vec<Recorder>, Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Answered>();
    let collector = tokio::spawn(async move {
        let mut recorders = vec![Recorder::new(); classes.max(1)];
        while let Some(Answered {
            class,
            latency,
            outcome,
        }) = rx.recv().await
        {
            if let Some(recorder) = recorders.get_mut(class) {
                recorder.record(latency, outcome);
            }
        }
        recorders
    });
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = Pacer {
        op: op.clone(),
        schedule: Schedule::new(rate, duration),
        start,
        end: start + duration,
        slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
        outcomes: tx,
        runtime: Handle::current(),
    };
    // tokio's timers fire on a millisecond tick: sleeping on them would send
    // each millisecond's requests together, in a burst up to a millisecond
    // late, and every latency would carry that. A thread of its own sleeps to
    // each request's time instead (to within the kernel's timer slack, about
    // 50 µs).
    let paced = tokio::task::spawn_blocking(move || pacer.run()).await;
    // A pacer that panicked (an `op` did) fails the run as it did when the
    // loop ran inline; one cancelled by the runtime's shutdown has nothing
    // left to report.
    if let Err(Ok(panic)) = paced.map_err(JoinError::try_into_panic) {
        std::panic::resume_unwind(panic);
    }
    let recorders = collector.await.unwrap_or_default();
    (recorders, start.elapsed())
}

/// One answered (or failed, or never sent) request.
struct Answered {
    class: usize,
    latency: Duration,
    outcome: Outcome,
}

/// Sends an open loop's requests at their intended times from a thread that
/// is not one of the runtime's workers, spawning each onto the runtime.
struct Pacer {
    op: Op,
    schedule: Schedule,
    start: Instant,
    end: Instant,
    slots: Arc<Semaphore>,
    outcomes: mpsc::UnboundedSender<Answered>,
    runtime: Handle,
}

impl Pacer {
    /// A free in-flight slot, waiting for one until the window closes (None
    /// then). The common case, a slot free at once, does not enter the
    /// runtime.
    fn slot(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        let waited = self.runtime.block_on(tokio::time::timeout_at(
            self.end,
            self.slots.clone().acquire_owned(),
        ));
        waited.ok()?.ok()
    }

    fn run(self) {
        let mut unsent = 0..0;
        for index in 0..self.schedule.count() {
            let intended = self.start + self.schedule.offset(index);
            if let Some(early) = intended.checked_duration_since(Instant::now()) {
                std::thread::sleep(early);
            }
            let Some(slot) = self.slot() else {
                unsent = index..self.schedule.count();
                break;
            };
            let (class, request) = (self.op)(index);
            let outcomes = self.outcomes.clone();
            self.runtime.spawn(async move {
                let outcome = answer(request).await;
                drop(slot);
                // From the intended time: a late send is the server's queue too.
                let latency = intended.elapsed();
                let _ = outcomes.send(Answered {
                    class,
                    latency,
                    outcome,
                });
            });
        }
        for index in unsent {
            // Its class is not known without making the request: class 0.
            let intended = self.start + self.schedule.offset(index);
            let latency = Instant::now().saturating_duration_since(intended);
            let _ = self.outcomes.send(Answered {
                class: 0,
                latency,
                outcome: Err(Failure::Unsent),
            });
        }
    }
}

/// The request's outcome, or a timeout once it has taken `REQUEST_TIMEOUT`.
async fn answer(request: Request) -> Outcome {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// `open_loop` for a one-class load, summarised.
pub async fn open_loop_summary(
    op: &Op,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> Summary {
    let (recorders, elapsed) = open_loop(op, 1, rate, duration, max_in_flight).await;
    merged(&recorders).summary(elapsed)
}

/// `concurrency` workers each send the next request as soon as the previous
/// one answered, for `duration`.
pub async fn closed_loop(op: &Op, concurrency: usize, duration: Duration) -> Summary {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let op = op.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut recorder = Recorder::new();
                while Instant::now() < deadline {
                    let index = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let (_, request) = op(index);
                    let outcome = answer(request).await;
                    recorder.record(sent.elapsed(), outcome);
                }
                recorder
            })
        })
        .collect();
    let mut all = Recorder::new();
    for worker in workers {
        if let Ok(recorder) = worker.await {
            all.merge(&recorder);
        }
    }
    all.summary(start.elapsed())
}

pub fn merged(recorders: &[Recorder]) -> Recorder {
    let mut all = Recorder::new();
    for recorder in recorders {
        all.merge(recorder);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_loop_sends_at_the_requested_rate_however_slow_the_answers() {
        // Every answer takes 50 ms; a closed loop with one worker would send
        // 10 in half a second, the open loop sends all 100 it scheduled.
        let op = single(|_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        });
        let summary = open_loop_summary(&op, 200.0, Duration::from_millis(500), 1000).await;
        assert_eq!(summary.requests, 100);
        assert!(summary.p50_ms >= 50.0, "{summary:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_go_out_spread_over_their_schedule_not_in_millisecond_bursts() {
        // 5,000 a second is one every 200 µs. Sent from a millisecond timer
        // they would leave five at a time, most gaps between sends a few µs;
        // the median gap says which, whatever an occasional late wake-up does.
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = sent.clone();
        let op = single(move |_| {
            record.lock().unwrap().push(std::time::Instant::now());
            async { Ok(()) }
        });
        let summary = open_loop_summary(&op, 5000.0, Duration::from_millis(200), 1000).await;
        assert_eq!(summary.requests, 1000);
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        let mut gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        let median = gaps[gaps.len() / 2];
        assert!(
            median >= Duration::from_micros(100),
            "median gap {median:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queueing_behind_a_stall_shows_in_the_open_loop_latencies() {
        // The server answers one request at a time in 20 ms: at 100/s it can
        // do 50/s, so later requests wait ever longer from their intended time.
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let op = single(move |_| {
            let gate = gate.clone();
            async move {
                let _one_at_a_time = gate.lock().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        });
        let summary = open_loop_summary(&op, 100.0, Duration::from_millis(500), 1000).await;
        assert_eq!(summary.requests, 50);
        assert!(summary.max_ms >= 400.0, "{summary:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_beyond_the_in_flight_limit_wait_and_those_never_sent_are_errors() {
        // Two slots, 100 ms answers, 100 a second for 300 ms: about 6 are
        // answered, each later than the last; the other ~24 never go out.
        let op = single(|_| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        });
        let summary = open_loop_summary(&op, 100.0, Duration::from_millis(300), 2).await;
        assert_eq!(summary.requests, 30);
        assert!((20..=28).contains(&summary.errors), "{summary:?}");
        assert_eq!(summary.failures["unsent"], summary.errors, "{summary:?}");
        assert!(summary.max_ms >= 200.0, "{summary:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latencies_are_recorded_under_each_requests_class() {
        let op: Op = Arc::new(|i| {
            let class = usize::from(i % 4 == 0);
            let outcome = if i % 2 == 0 {
                Ok(())
            } else {
                Err(Failure::Status(503))
            };
            (class, Box::pin(async move { outcome }) as Request)
        });
        let (recorders, _) = open_loop(&op, 2, 400.0, Duration::from_millis(100), 1000).await;
        assert_eq!(recorders[1].count(), 10);
        assert_eq!(recorders[0].count(), 30);
        let summary = recorders[0].summary(Duration::from_secs(1));
        assert_eq!(summary.errors, 20);
        assert_eq!(summary.failures["503"], 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_closed_loop_keeps_each_worker_busy_until_the_deadline() {
        let op = single(|_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        });
        let summary = closed_loop(&op, 4, Duration::from_millis(300)).await;
        // About 4 workers × 30 requests; a busy machine delays timers, so allow slack.
        assert!((40..=130).contains(&summary.requests), "{summary:?}");
        assert_eq!(summary.errors, 0);
    }
}
