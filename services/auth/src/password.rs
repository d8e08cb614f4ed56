//! Argon2id password hashing on a small pool of dedicated threads, off the
//! async executor. Argon2 takes the whole password (no 72-byte truncation as
//! with bcrypt).
//!
//! Each worker keeps its 19 MiB of Argon2 memory for its whole life. Letting
//! every hash allocate its own (as `Argon2::hash_password` does) on the
//! blocking pool left most of the process's memory stranded in the
//! allocator: after a few hundred registrations `gocommerce all` held about
//! 800 MiB, three 19 MiB blocks in each of a dozen glibc arenas. With the
//! workers it stays near one block per worker. The queue in front of the
//! workers also means a burst of logins waits instead of exhausting threads.
//!
//! The workers run under Linux's idle scheduling class (`SCHED_IDLE`): a hash
//! is tens of milliseconds of pure CPU, and on a node with two cores a burst
//! of logins would otherwise take them from every other request. Idle cores
//! still go to hashing in full, but any request thread that wakes up takes
//! the core at once. A high nice value was not enough: under the kernel's
//! EEVDF scheduler a nice-10 hash still ran out its time slice before a woken
//! request thread got the core, and a catalog read, which wakes four threads
//! on its way, collected those waits (its p99 rose 2 to 12 times while logins
//! saturated).

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{mpsc, oneshot};

use crate::error::AuthError;

/// OWASP's first Argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
fn params() -> Params {
    #[allow(clippy::expect_used)]
    Params::new(19 * 1024, 2, 1, None).expect("constant parameters are valid")
}

/// Jobs waiting for a worker, per worker; more callers wait, without a thread, to enqueue.
const QUEUE_PER_WORKER: usize = 64;

// Verifying against this when an email is unknown makes a failed login take
// as long as a wrong password, so timing does not reveal which emails exist.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut memory = Vec::new();
    hash_with(&mut memory, b"not a real password").unwrap_or_default()
});

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

#[derive(Debug, Clone)]
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
}

impl Hasher {
    /// Starts `workers` hashing threads; they end when the last clone is dropped.
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        let (jobs, queue) = mpsc::channel::<Job>(workers * QUEUE_PER_WORKER);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..workers {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    yield_to_requests();
                    work(&queue);
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        Self { jobs }
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
        let job: Job = Box::new(move |memory| {
            let _ = reply.send(work(memory));
        });
        self.jobs
            .send(job)
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

fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        // Hold the lock only to take a job, never while hashing.
        let job = queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        match job {
            Some(job) => job(&mut memory),
            None => return,
        }
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
