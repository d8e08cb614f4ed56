//! Argon2id password hashing on a small pool of dedicated threads, off the
//! async executor. Argon2 takes the whole password (no 72-byte truncation as
//! with bcrypt).
//!
//! Each worker keeps its 19 MiB of Argon2 memory from one hash to the next,
//! and gives it back after `IDLE_RELEASE` without a job. Letting every hash
//! allocate its own (as `Argon2::hash_password` does) on the blocking pool
//! left most of the process's memory stranded in the allocator: after a few
//! hundred registrations `gocommerce all` held about 800 MiB, three 19 MiB
//! blocks in each of a dozen glibc arenas. With the workers it stays near one
//! block per busy worker, and none once logins stop: two idle blocks were 38
//! of the 100 MiB an idle `gocommerce all` may take. The queue in front of
//! the workers also means a burst of logins waits instead of exhausting
//! threads.
//!
//! The workers run under Linux's idle scheduling class (`SCHED_IDLE`): a hash
//! is tens of milliseconds of pure CPU, and on a node with two cores a burst
//! of logins would otherwise take them from every other request. Idle cores
//! still go to hashing in full, but any request thread of this process that
//! wakes up takes the core at once. The class only counts inside one
//! scheduling group: a thread of another group (a PostgreSQL on the same
//! host, as a systemd unit, another pod, or another session with the
//! kernel's autogroup on) is compared group against group and may wait for
//! the scheduler's tick (bench/GAPS.md, target 4). A high nice value was not
//! enough: under the kernel's EEVDF scheduler a nice-10 hash still ran out
//! its time slice before a woken request thread got the core, and a catalog
//! read, which wakes four threads on its way, collected those waits (its p99
//! rose 2 to 12 times while logins saturated); `SCHED_BATCH` at nice 19
//! read no better than the idle class in alternated runs (bench/HISTORY.md,
//! 2026-12-06). The price is paid by logins under a mixed load: they get only
//! what the other requests leave and are the first to queue. The full
//! benchmark with the workers at normal priority (2026-12-03) made logins at
//! 70% of the mixed load faster (p99 2.8 s → 0.9 s) but served fewer of them,
//! and took the sustained mixed rate from 0.77 to 0.55 of predicted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::error::AuthError;

/// OWASP's first Argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
fn params() -> Params {
    #[allow(clippy::expect_used)]
    Params::new(19 * 1024, 2, 1, None).expect("constant parameters are valid")
}

/// Jobs waiting for a worker, per worker; more callers wait, without a thread, to enqueue.
const QUEUE_PER_WORKER: usize = 64;

/// How long a worker keeps its Argon2 memory without a job. Allocating it
/// afresh costs a hash about a millisecond of page faults; a pause in logins
/// this long is not a burst any more.
pub const IDLE_RELEASE: Duration = Duration::from_secs(10);

// Verifying against this when an email is unknown makes a failed login take
// as long as a wrong password, so timing does not reveal which emails exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut memory = Vec::new();
    hash_with(&mut memory, b"not a real password").unwrap_or_default()
});

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

#[derive(Debug, Clone)]
pub struct Hasher {
    jobs: flume::Sender<Job>,
    /// Argon2 blocks the workers hold between jobs, all together.
    retained: Arc<AtomicUsize>,
}

impl Hasher {
    /// Starts `workers` hashing threads; they end when the last clone is dropped.
    pub fn new(workers: usize) -> Self {
        Self::with_idle_release(workers, IDLE_RELEASE)
    }

    /// Like `new`, with workers that free their memory after `idle` without a job.
    pub fn with_idle_release(workers: usize, idle: Duration) -> Self {
        let workers = workers.max(1);
        let (jobs, queue) = flume::bounded::<Job>(workers * QUEUE_PER_WORKER);
        let retained = Arc::new(AtomicUsize::new(0));
        for index in 0..workers {
            let queue = queue.clone();
            let retained = Arc::clone(&retained);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    yield_to_requests();
                    work(&queue, idle, &retained);
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        Self { jobs, retained }
    }

    /// The bytes of Argon2 memory the workers hold between jobs.
    #[cfg(test)]
    fn retained_bytes(&self) -> usize {
        self.retained.load(Ordering::Relaxed) * size_of::<Block>()
    }

    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.run(move |memory| hash_with(memory, password.as_bytes()))
            .await
    }

    /// Whether `password` matches `hash`; with no hash, burns the same time and says no.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AuthError> {
        self.run(move |memory| {
            let known = hash.is_some();
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
            let matches = verify_with(memory, password.as_bytes(), &hash)?;
            Ok(known && matches)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let (reply, answer) = oneshot::channel();
        let retained = Arc::clone(&self.retained);
        let job: Job = Box::new(move |memory| {
            let before = memory.len();
            let outcome = work(memory);
            // Jobs only ever grow the memory (see `blocks`); counted before
            // the caller hears back.
            retained.fetch_add(memory.len().saturating_sub(before), Ordering::Relaxed);
            let _ = reply.send(outcome);
        });
        self.jobs
            .send_async(job)
            .await
            .map_err(|_| AuthError::Hashing("the hashing threads are gone".to_owned()))?;
        answer
            .await
            .map_err(|_| AuthError::Hashing("a hashing thread failed".to_owned()))?
    }
}

/// The scheduling policy of the hashing threads.
#[cfg(target_os = "linux")]
const HASHING_POLICY: thread_priority::ThreadSchedulePolicy =
    thread_priority::ThreadSchedulePolicy::Normal(
        thread_priority::NormalThreadSchedulePolicy::Idle,
    );

#[cfg(target_os = "linux")]
fn yield_to_requests() {
    let lowered = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        thread_priority::ThreadPriority::Min,
        HASHING_POLICY,
    );
    if let Err(error) = lowered {
        tracing::warn!(?error, "failed to lower the priority of a hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn yield_to_requests() {}

fn work(queue: &flume::Receiver<Job>, idle: Duration, retained: &AtomicUsize) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = if memory.is_empty() {
            queue.recv().ok()
        } else {
            match queue.recv_timeout(idle) {
                Ok(job) => Some(job),
                Err(flume::RecvTimeoutError::Timeout) => {
                    retained.fetch_sub(memory.len(), Ordering::Relaxed);
                    memory = Vec::new();
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => None,
            }
        };
        let Some(job) = job else { return };
        job(&mut memory);
    }
}

/// `memory` grown to what `params` needs, reused from call to call.
fn blocks<'a>(memory: &'a mut Vec<Block>, params: &Params) -> &'a mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    &mut memory[..needed]
}

fn hashing_error(error: impl std::fmt::Display) -> AuthError {
    AuthError::Hashing(error.to_string())
}

/// A new salted Argon2id hash in PHC string format.
fn hash_with(memory: &mut Vec<Block>, password: &[u8]) -> Result<String, AuthError> {
    let params = params();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(hashing_error)?;
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(output_len, |out| {
        argon2
            .hash_password_into_with_memory(password, raw_salt, out, blocks(memory, &params))
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(hashing_error)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(hashing_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to the PHC string `hash`, with the algorithm,
/// version and parameters the hash names.
fn verify_with(memory: &mut Vec<Block>, password: &[u8], hash: &str) -> Result<bool, AuthError> {
    let parsed = PasswordHash::new(hash).map_err(hashing_error)?;
    let expected = parsed
        .hash
        .ok_or_else(|| AuthError::Hashing("the stored hash has no output".to_owned()))?;
    let salt = parsed
        .salt
        .ok_or_else(|| AuthError::Hashing("the stored hash has no salt".to_owned()))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(hashing_error)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(hashing_error)?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(hashing_error)?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(hashing_error)?;
    let computed = Output::init_with(expected.len(), |out| {
        argon2
            .hash_password_into_with_memory(password, raw_salt, out, blocks(memory, &params))
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(hashing_error)?;
    // Output's equality is constant-time.
    Ok(computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_longer_than_72_bytes_are_not_truncated() {
        let hasher = Hasher::new(2);
        let prefix = "x".repeat(72);
        let hash = hasher.hash(format!("{prefix}A")).await.expect("hash");
        assert!(
            hasher
                .verify(format!("{prefix}A"), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify(format!("{prefix}B"), Some(hash))
                .await
                .expect("verify")
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_only_when_no_request_thread_wants_the_core() {
        let hasher = Hasher::new(1);

        let worker = hasher
            .run(|_| {
                thread_priority::thread_schedule_policy()
                    .map_err(|e| AuthError::Hashing(format!("{e:?}")))
            })
            .await
            .expect("the worker's policy");
        let caller = thread_priority::thread_schedule_policy().expect("the caller's policy");

        assert_eq!(worker, HASHING_POLICY);
        assert_ne!(
            caller, HASHING_POLICY,
            "only the hashing threads are demoted"
        );
    }

    #[tokio::test]
    async fn workers_keep_their_memory_between_jobs_and_free_it_when_idle() {
        let hasher = Hasher::with_idle_release(1, Duration::from_millis(200));
        let block_bytes = params().block_count() * size_of::<Block>();
        assert_eq!(hasher.retained_bytes(), 0, "nothing is held before a job");

        let hash = hasher.hash("correct horse".to_owned()).await.expect("hash");
        let held_after_a_job = hasher.retained_bytes();
        let freed = wait_until(|| hasher.retained_bytes() == 0).await;
        let verified = hasher
            .verify("correct horse".to_owned(), Some(hash))
            .await
            .expect("verify");

        assert_eq!(held_after_a_job, block_bytes, "kept for the next job");
        assert!(freed, "an idle worker frees its memory");
        assert!(verified, "a worker that freed its memory still hashes");
        assert_eq!(hasher.retained_bytes(), block_bytes);
    }

    /// Polls `done` for up to ten seconds.
    async fn wait_until(done: impl Fn() -> bool) -> bool {
        for _ in 0..1000 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let hasher = Hasher::new(1);
        assert!(
            !hasher
                .verify("not a real password".to_owned(), None)
                .await
                .expect("verify")
        );
    }

    #[test]
    fn hashes_made_by_the_argon2_crate_itself_still_verify() {
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let stored = Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        let mut memory = Vec::new();

        assert!(verify_with(&mut memory, b"correct horse", &stored).expect("verify"));
        assert!(!verify_with(&mut memory, b"correct horsf", &stored).expect("verify"));
    }

    #[test]
    fn our_hashes_verify_with_the_argon2_crate_and_reuse_one_buffer() {
        use argon2::password_hash::PasswordVerifier as _;
        let mut memory = Vec::new();
        let first = hash_with(&mut memory, b"correct horse").expect("hash");
        let second = hash_with(&mut memory, b"correct horse").expect("hash");

        assert_ne!(first, second, "each hash has its own salt");
        assert_eq!(memory.len(), params().block_count());
        let parsed = PasswordHash::new(&first).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn hashes_are_argon2id() {
        let hash = Hasher::new(1)
            .hash("correct horse".to_owned())
            .await
            .expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
    }
}
