//! Client queries run in worker processes (`patchtrail query-worker`), so
//! that a query can be stopped for sure: DataFusion stops a query only when
//! its operators yield, and some never do for a long time (a cross join
//! producing from one input batch, a per-row function over long strings);
//! and memory allocated outside DataFusion's pool (a projection of large
//! values) can only be bounded by the process that holds it.
//!
//! The server keeps a pool of at most `max_concurrent_queries` workers. A
//! worker runs one query at a time and is reused; it is killed (SIGKILL,
//! then replaced on demand) when its query passes the time limit, when the
//! client goes away (the request future is dropped, and the child with it),
//! or when its resident memory passes its budget (DataFusion's pool plus a
//! fixed overhead), sampled every 25 ms.
//!
//! The protocol, over the worker's stdin and stdout, is frames of a 4-byte
//! big-endian length and a payload: first the server's [`WorkerSettings`];
//! then per query a [`Request`], answered by a [`Reply`] and, when it is
//! `ok`, a frame with the encoded answer.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use processor::lake::Lake;
use schemas::ErrorClass;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::Answer;
use super::format::{Encoder, Format};
use crate::error::{QueryError, classify};
use crate::priorities::Weights;
use crate::session::{LakeSession, bounded_runtime};

/// How the server starts a worker: the program (patchtrail itself) and its arguments.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (`query-worker`).
    pub args: Vec<String>,
}

/// What a worker is told when it starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// The lake's location (`Lake::open`).
    pub lake: String,
    /// DataFusion's memory pool in the worker, bytes.
    pub memory_limit_bytes: usize,
    /// The priority score's weights.
    pub weights: Weights,
    /// The server's process id: a worker whose parent is another (the
    /// server died before the worker asked to die with it) stops at once.
    pub server_pid: u32,
}

/// One query.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    sql: String,
    format: String,
    max_rows: usize,
    max_bytes: usize,
    /// CPU seconds the query may use, all threads together: the worker's
    /// CPU limit (`RLIMIT_CPU`) is set this far above what it has used, a
    /// second fence behind the server's time limit, also when the server
    /// is gone.
    cpu_secs: u64,
    /// The snapshot the server serves (the lake's publication stamp): the
    /// worker opens the lake again when its own is another.
    version: usize,
}

/// The outcome of one query.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    truncated: bool,
    class: Option<String>,
    message: Option<String>,
}

/// Resident memory a worker holds besides DataFusion's pool: the binary,
/// its runtimes, the session, an answer being encoded.
pub const WORKER_OVERHEAD_BYTES: usize = 256 << 20;

/// The stack of threads that plan and run a client's query: deep
/// expression trees are planned, and dropped, recursively (reserved,
/// committed only as used).
pub const QUERY_STACK_BYTES: usize = 64 << 20;

/// A query running longer yields the CPU to shorter ones (its worker's
/// threads are niced to [`YIELDED_NICE`]).
const YIELD_AFTER: Duration = Duration::from_secs(1);

/// The nice value of a worker whose query ran past [`YIELD_AFTER`]: at 10
/// the kernel weighs it about a tenth of a worker at 0.
const YIELDED_NICE: i32 = 10;

/// How often a busy worker's resident memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

/// The server's side: idle workers and how many may run.
pub struct WorkerPool {
    command: WorkerCommand,
    settings: WorkerSettings,
    idle: Mutex<Vec<Worker>>,
    slots: Arc<Semaphore>,
    max: usize,
    /// The answers the server holds until their clients have read them, in
    /// KiB: each takes its size from here before it is read from its
    /// worker, and gives it back when its last byte is sent or its client
    /// gone (the permit lives in the answer's bytes).
    answers: Arc<Semaphore>,
    answer_budget_bytes: usize,
}

/// A running worker.
struct Worker {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    pid: u32,
    started: Instant,
}

/// What became of a query sent to a worker, when it did not answer.
enum Stopped {
    Timeout,
    Memory(usize),
    /// The answer, this many bytes, does not fit in what is left of the
    /// server's answer budget.
    NoRoom(usize),
    Gone(String),
}

/// An answer read from a worker with its share of the answer budget.
struct Held {
    body: Vec<u8>,
    _share: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl WorkerPool {
    /// A pool of at most `max` workers started with `command`, told
    /// `settings`, whose answers waiting for their clients take at most
    /// `answer_budget_bytes` of the server's memory.
    pub fn new(command: WorkerCommand, settings: WorkerSettings, max: usize, answer_budget_bytes: usize) -> WorkerPool {
        WorkerPool {
            command,
            settings,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(max)),
            max,
            answers: Arc::new(Semaphore::new(answer_budget_bytes >> 10)),
            answer_budget_bytes,
        }
    }

    /// Runs `sql` on a worker; `Busy` when every worker is taken.
    #[allow(clippy::too_many_arguments)]
    pub async fn query(
        &self,
        sql: String,
        format: Format,
        max_rows: usize,
        max_bytes: usize,
        version: usize,
        timeout: Duration,
    ) -> Result<Answer, QueryError> {
        let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            return Err(QueryError::Busy(format!(
                "{} queries are running, the most this server runs at once (server.max_concurrent_queries); \
                 try again in a moment",
                self.max
            )));
        };
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut worker = match idle {
            Some(worker) => worker,
            None => self.spawn().await?,
        };
        let cpu_secs = cpu_budget(timeout);
        let request = Request { sql, format: format_name(format).to_owned(), max_rows, max_bytes, cpu_secs, version };
        let budget = self.settings.memory_limit_bytes + WORKER_OVERHEAD_BYTES;
        let pid = worker.pid;
        let mut yielded = false;
        let outcome = tokio::select! {
            outcome = worker.ask(&request, &self.answers) => outcome,
            () = tokio::time::sleep(timeout) => Err(Stopped::Timeout),
            used = watch_memory(pid, budget) => Err(Stopped::Memory(used)),
            () = yield_after(pid, YIELD_AFTER, &mut yielded) => unreachable!("yield_after never resolves"),
        };
        match outcome {
            Ok((reply, body)) => {
                // A worker that yielded and cannot have its priority back
                // (that takes privilege) is not used again.
                if !yielded || renice(pid, 0) {
                    self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(worker);
                }
                match reply.ok {
                    true => Ok(Answer { body, format, truncated: reply.truncated }),
                    false => Err(error_of(&reply)),
                }
            }
            Err(stopped) => {
                // A worker that left on its own has its way of dying read
                // first; whatever else it was doing stops now.
                let died = match stopped {
                    Stopped::Gone(_) => tokio::time::timeout(Duration::from_secs(1), worker.child.wait())
                        .await
                        .ok()
                        .and_then(Result::ok),
                    _ => None,
                };
                let _ = worker.child.start_kill();
                let _ = worker.child.wait().await;
                if let Some(limit) = died.and_then(|status| limit_signalled(status, timeout)) {
                    return Err(QueryError::Limit(limit));
                }
                Err(match stopped {
                    Stopped::Timeout => QueryError::Limit(format!(
                        "query stopped: it ran longer than the {} s limit (server.query_timeout_secs)",
                        timeout.as_secs()
                    )),
                    Stopped::Memory(used) => QueryError::Limit(format!(
                        "query stopped: it needed more than {} MiB of memory ({} MiB, server.memory_limit_mib)",
                        budget >> 20,
                        used >> 20
                    )),
                    Stopped::NoRoom(bytes) => QueryError::Busy(format!(
                        "the answer ({} MiB) does not fit in what is left of the {} MiB this server holds for \
                         answers its clients have not read yet (server.answer_budget_mib); try again in a moment",
                        bytes.div_ceil(1 << 20),
                        self.answer_budget_bytes >> 20
                    )),
                    Stopped::Gone(why) => QueryError::Internal(format!("the query worker stopped: {why}")),
                })
            }
        }
    }

    /// Workers idle now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Ends idle workers that have lived longer than `age` (they hold a
    /// session each); the newest stays, ready, and so do the younger ones.
    pub fn reap(&self, age: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.sort_by_key(|worker| std::cmp::Reverse(worker.started));
        let from = idle.len().min(1);
        let old: Vec<Worker> = idle.extract_if(from.., |worker| worker.started.elapsed() > age).collect();
        drop(idle);
        drop(old);
    }

    async fn spawn(&self) -> Result<Worker, QueryError> {
        let fail = |e: std::io::Error| QueryError::Internal(format!("cannot start a query worker: {e}"));
        let mut child = tokio::process::Command::new(&self.command.program)
            .args(&self.command.args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            // A worker has no use for the server's secrets.
            .env_remove("PATCHTRAIL__AUTH__TOKEN")
            .kill_on_drop(true)
            .spawn()
            .map_err(fail)?;
        let (Some(mut stdin), Some(stdout), Some(pid)) = (child.stdin.take(), child.stdout.take(), child.id()) else {
            return Err(QueryError::Internal("a query worker started without pipes".to_owned()));
        };
        let settings = serde_json::to_vec(&self.settings).map_err(|e| QueryError::Internal(e.to_string()))?;
        write_frame(&mut stdin, &settings).await.map_err(fail)?;
        Ok(Worker { child, stdin, stdout, pid, started: Instant::now() })
    }
}

impl Worker {
    /// Sends a request and reads its reply and answer, the answer only
    /// once it has its share of `answers` (KiB).
    async fn ask(&mut self, request: &Request, answers: &Arc<Semaphore>) -> Result<(Reply, bytes::Bytes), Stopped> {
        let gone = |e: std::io::Error| Stopped::Gone(e.to_string());
        let request = serde_json::to_vec(request).map_err(|e| Stopped::Gone(e.to_string()))?;
        write_frame(&mut self.stdin, &request).await.map_err(gone)?;
        let reply: Reply = serde_json::from_slice(&read_frame(&mut self.stdout).await.map_err(gone)?)
            .map_err(|e| Stopped::Gone(format!("an unreadable reply: {e}")))?;
        if !reply.ok {
            return Ok((reply, bytes::Bytes::new()));
        }
        let mut length = [0u8; 4];
        self.stdout.read_exact(&mut length).await.map_err(gone)?;
        let length = u32::from_be_bytes(length);
        let share = Arc::clone(answers).try_acquire_many_owned(length.div_ceil(1024));
        let share = share.map_err(|_| Stopped::NoRoom(length as usize))?;
        let mut body = vec![0u8; length as usize];
        self.stdout.read_exact(&mut body).await.map_err(gone)?;
        Ok((reply, bytes::Bytes::from_owner(Held { body, _share: share })))
    }
}

/// The limit a worker that ended with `status` ran into, when a signal
/// that stands for one ended it: SIGABRT is Rust's end for a stack
/// overflow (an expression nested too deep to plan) and for an allocation
/// that failed, SIGXCPU the CPU limit, SIGKILL the kernel's OOM killer.
fn limit_signalled(status: std::process::ExitStatus, timeout: Duration) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal()?;
    if signal == rustix::process::Signal::ABORT.as_raw() {
        Some(format!(
            "query stopped: its worker aborted, which it does when an expression nests too deep for its \
             {} MiB stack or memory runs out; simplify the query",
            QUERY_STACK_BYTES >> 20
        ))
    } else if signal == rustix::process::Signal::XCPU.as_raw() {
        Some(format!(
            "query stopped: it used more CPU than the {} s limit allows on every core (server.query_timeout_secs)",
            timeout.as_secs()
        ))
    } else if signal == rustix::process::Signal::KILL.as_raw() {
        Some(
            "query stopped: its worker was killed, most likely by the kernel for want of memory \
              (server.memory_limit_mib)"
                .to_owned(),
        )
    } else {
        None
    }
}

/// The CPU seconds a query may use: its time limit on every core, and two
/// seconds more for the session and the answer.
fn cpu_budget(timeout: Duration) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    timeout.as_secs().saturating_add(1).saturating_mul(cores).saturating_add(2)
}

/// CPU seconds this process has used (user and system), from /proc.
fn cpu_used_secs() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // After the name: state is field 3, utime 14 and stime 15, in clock ticks (100 a second on Linux).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime).div_ceil(100))
}

/// Sets this process's CPU limit `budget` seconds above what it has used:
/// past it the kernel sends SIGXCPU, which ends it.
fn limit_cpu(budget: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Some(used) = cpu_used_secs() else { return };
    let maximum = getrlimit(Resource::Cpu).maximum;
    let current = used.saturating_add(budget);
    let current = maximum.map_or(current, |maximum| current.min(maximum));
    if let Err(error) = setrlimit(Resource::Cpu, Rlimit { current: Some(current), maximum }) {
        tracing::warn!(%error, "cannot set the query worker's CPU limit");
    }
}

/// After `delay`, lowers the CPU priority of every thread of process
/// `pid` to nice [`YIELDED_NICE`] (Linux keeps a priority per thread) and
/// sets `yielded`; never resolves. A long query then takes only what short
/// ones and new workers leave: on 2 cores, 4 heavy queries left a worker
/// that started beside them 1/5 of the CPU, and a small query 2 s.
async fn yield_after(pid: u32, delay: Duration, yielded: &mut bool) {
    tokio::time::sleep(delay).await;
    renice(pid, YIELDED_NICE);
    *yielded = true;
    std::future::pending::<()>().await;
}

/// Sets the nice value of every thread of process `pid`; whether each took
/// it (one that ended in between has nothing to set).
fn renice(pid: u32, nice: i32) -> bool {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let mut all = true;
    for thread in threads {
        let tid = thread.file_name().to_str().and_then(|name| name.parse::<i32>().ok());
        if let Some(tid) = tid.and_then(rustix::process::Pid::from_raw) {
            all &= rustix::process::setpriority_process(Some(tid), nice).is_ok();
        }
    }
    all
}

/// Resolves when the resident memory of process `pid` passes `budget`
/// bytes (with the amount), or never.
async fn watch_memory(pid: u32, budget: usize) -> usize {
    let path = format!("/proc/{pid}/statm");
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        // statm: size resident shared ..., in pages.
        let resident = std::fs::read_to_string(&path)
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
            .map_or(0, |pages| pages * 4096);
        if resident > budget {
            return resident;
        }
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Csv => "csv",
        Format::ArrowStream => "arrow",
    }
}

fn format_named(name: &str) -> Format {
    match name {
        "csv" => Format::Csv,
        "arrow" => Format::ArrowStream,
        _ => Format::Json,
    }
}

fn error_of(reply: &Reply) -> QueryError {
    let message = reply.message.clone().unwrap_or_default();
    match reply.class.as_deref() {
        Some("input") => QueryError::Invalid(message),
        Some("limit") => QueryError::Limit(message),
        Some("transient") => QueryError::Unavailable(message),
        _ => QueryError::Internal(message),
    }
}

async fn write_frame(out: &mut (impl AsyncWriteExt + Unpin), payload: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("a frame over 4 GiB"))?;
    out.write_all(&length.to_be_bytes()).await?;
    out.write_all(payload).await?;
    out.flush().await
}

async fn read_frame(input: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    input.read_exact(&mut length).await?;
    let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
    input.read_exact(&mut payload).await?;
    Ok(payload)
}

fn read_frame_blocking(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        // The server closed the pipe: it stopped, or let this worker go.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
    input.read_exact(&mut payload)?;
    Ok(Some(payload))
}

fn write_frame_blocking(out: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("a frame over 4 GiB"))?;
    out.write_all(&length.to_be_bytes())?;
    out.write_all(payload)?;
    out.flush()
}

/// The worker's side: reads its settings, then answers queries until the
/// server closes the pipe. Runs the queries on `runtime`.
pub fn serve_queries(
    runtime: &tokio::runtime::Runtime,
    mut input: impl Read,
    mut output: impl Write,
) -> Result<(), QueryError> {
    let io = |e: std::io::Error| QueryError::Internal(format!("the query worker's pipe: {e}"));
    // Die with the server, whatever kills it (a SIGKILL, the OOM killer):
    // a worker left running would keep its query going without any limit.
    if let Err(error) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        tracing::warn!(%error, "cannot ask to die with the server");
    }
    let Some(settings) = read_frame_blocking(&mut input).map_err(io)? else { return Ok(()) };
    let settings: WorkerSettings =
        serde_json::from_slice(&settings).map_err(|e| QueryError::Internal(format!("worker settings: {e}")))?;
    if std::os::unix::process::parent_id() != settings.server_pid {
        // The server died before the signal was asked for.
        return Ok(());
    }
    let lake = Lake::open(&settings.lake)?;
    let roots = local_roots(&settings.lake);
    let pool = bounded_runtime(settings.memory_limit_bytes)?;
    let mut session: Option<(usize, Arc<LakeSession>)> = None;
    while let Some(request) = read_frame_blocking(&mut input).map_err(io)? {
        let request: Request =
            serde_json::from_slice(&request).map_err(|e| QueryError::Internal(format!("a query request: {e}")))?;
        limit_cpu(request.cpu_secs);
        let current = match &session {
            Some((version, session)) if *version == request.version => Ok(Arc::clone(session)),
            _ => runtime
                .block_on(LakeSession::open_with(&lake, Some(Arc::clone(&pool)), &settings.weights))
                .map(Arc::new),
        };
        let outcome = match current {
            Ok(current) => {
                session = Some((request.version, Arc::clone(&current)));
                let format = format_named(&request.format);
                // On the runtime's threads, whose stacks the caller made large
                // enough for the deepest expression the length limit allows
                // (`block_on` alone would plan on this thread's stack).
                let task = runtime.spawn(async move {
                    answer(&current, &request.sql, format, request.max_rows, request.max_bytes).await
                });
                runtime.block_on(task).unwrap_or_else(|e| Err(QueryError::Internal(format!("the query failed: {e}"))))
            }
            Err(error) => Err(error),
        };
        match outcome {
            Ok(answer) => {
                let reply = Reply { ok: true, truncated: answer.truncated, class: None, message: None };
                write_frame_blocking(&mut output, &serde_json::to_vec(&reply).expect("a reply serializes"))
                    .map_err(io)?;
                write_frame_blocking(&mut output, &answer.body).map_err(io)?;
            }
            Err(error) => {
                let class = match error.class() {
                    ErrorClass::Input => "input",
                    ErrorClass::Limit => "limit",
                    ErrorClass::Transient => "transient",
                    ErrorClass::Internal => "internal",
                };
                let reply = Reply {
                    ok: false,
                    truncated: false,
                    class: Some(class.to_owned()),
                    message: Some(hide_roots(error.to_string(), &roots)),
                };
                write_frame_blocking(&mut output, &serde_json::to_vec(&reply).expect("a reply serializes"))
                    .map_err(io)?;
            }
        }
    }
    Ok(())
}

/// The ways a local lake's root can appear in an error (the file store's
/// "not found" names a vacuumed file by its absolute path), longest first.
fn local_roots(location: &str) -> Vec<String> {
    let path = location.strip_prefix("file://").unwrap_or(location);
    if path.contains("://") {
        return Vec::new();
    }
    let mut roots: Vec<String> = std::fs::canonicalize(path)
        .ok()
        .and_then(|root| root.to_str().map(str::to_owned))
        .into_iter()
        .chain([path.trim_end_matches('/').to_owned()])
        .filter(|root| root.len() > 1)
        .collect();
    roots.sort_by_key(|root| std::cmp::Reverse(root.len()));
    roots
}

/// `message` with the lake's local root taken out of every path in it, so a
/// client sees files by their place in the lake (`exposures/…parquet`).
fn hide_roots(mut message: String, roots: &[String]) -> String {
    for root in roots {
        message = message.replace(&format!("{root}/"), "").replace(root.as_str(), "<lake>");
    }
    message
}

/// Runs `sql` and encodes its answer as it streams: at most `max_rows`
/// rows (the stream is dropped, and its execution stopped, past them) and
/// `max_bytes` bytes.
async fn answer(
    session: &LakeSession,
    sql: &str,
    format: Format,
    max_rows: usize,
    max_bytes: usize,
) -> Result<Answer, QueryError> {
    let mut stream = session.stream(sql).await?;
    let mut encoder = Encoder::new(format, stream.schema(), max_bytes)?;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(classify)?;
        let room = max_rows - encoder.rows();
        if batch.num_rows() > room {
            encoder.write(&batch.slice(0, room))?;
            truncated = true;
            break;
        }
        encoder.write(&batch)?;
    }
    drop(stream);
    Ok(Answer { body: encoder.finish(truncated)?.into(), format, truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reaping_keeps_the_newest_worker_and_the_young_ones() {
        // `sleep` stands in for a worker: it is a process, and never reads its settings.
        let command = WorkerCommand { program: "sleep".into(), args: vec!["30".into()] };
        let settings = WorkerSettings {
            lake: String::new(),
            memory_limit_bytes: 0,
            weights: Weights::default(),
            server_pid: std::process::id(),
        };
        let pool = WorkerPool::new(command, settings, 4, 1 << 20);
        pool.reap(Duration::from_secs(60));
        assert_eq!(pool.idle(), 0, "an empty pool is reaped too");
        let mut workers = Vec::new();
        for _ in 0..3 {
            workers.push(pool.spawn().await.expect("spawns"));
        }
        let long_ago = Instant::now().checked_sub(Duration::from_secs(120)).expect("an instant two minutes back");
        workers[0].started = long_ago;
        pool.idle.lock().expect("lock").extend(workers);
        pool.reap(Duration::from_secs(60));
        assert_eq!(pool.idle(), 2, "the two young workers stay");
        for worker in pool.idle.lock().expect("lock").iter_mut() {
            worker.started = long_ago;
        }
        pool.reap(Duration::from_secs(60));
        assert_eq!(pool.idle(), 1, "one worker stays ready");
    }

    #[test]
    fn errors_name_files_by_their_place_in_the_lake() {
        let dir = std::env::temp_dir();
        let roots = local_roots(dir.to_str().expect("utf-8"));
        let canonical = std::fs::canonicalize(&dir).expect("canonical");
        let message = format!("Object at location {}/exposures/a.parquet not found", canonical.display());
        assert_eq!(hide_roots(message, &roots), "Object at location exposures/a.parquet not found");
        assert!(local_roots("s3://bucket/lake").is_empty());
    }

    #[test]
    fn a_query_gets_its_cpu_budget_above_what_the_worker_used() {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let before = getrlimit(Resource::Cpu);
        let used = cpu_used_secs().expect("this process's CPU time");
        limit_cpu(3600);
        let limit = getrlimit(Resource::Cpu);
        setrlimit(Resource::Cpu, before).expect("restored");
        let current = limit.current.expect("a CPU limit");
        assert!((used + 3600..=used + 3601).contains(&current), "{current} against {used} used");
        assert_eq!(cpu_budget(Duration::from_secs(5)) % 6, 2, "6 seconds on every core, and 2");
    }
}
