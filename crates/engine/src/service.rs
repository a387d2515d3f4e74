//! The async service: [`EngineHandle`] (cheap to clone) puts requests on a bounded queue and
//! refuses them at once with [`EngineError::Busy`] when it is full. One worker thread owns the
//! [`Engine`] (the model is not shared across threads) and runs continuous batching: between
//! rounds it admits a queued request (its prefill runs then), and each round advances up to
//! `max_batch` active sequences by one token in one batched model pass (each with its own
//! sampler, stop strings and timings); finished sequences leave after the round.
//!
//! Fairness: up to `max_active` sequences are admitted (more than one batch), and each round
//! takes the sequences that have waited longest (a new one first, for its first token), so a
//! newcomer gets its first token after its prefill however long the others' answers are, and
//! every running answer keeps advancing.
//!
//! Each subscriber has a bounded event buffer: one that stops reading (a stalled HTTP client)
//! is dropped when its buffer is full, and a request whose subscribers all went away is stopped
//! before its next round. Identical requests that arrive while the first is still queued share
//! one computation: every subscriber receives every event (once it runs, a repeat is a new job,
//! made cheap by the caches).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use screenpilot_model::preprocess::VideoConfig;
use serde::Serialize;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, watch};

use crate::engine::{CacheReport, Engine};
use crate::error::{EngineError, Result};
use crate::events::{Event, FinishReason};
use crate::request::{Request, RequestLimits, ValidRequest};
use crate::sequence::Sequence;

/// Counters of the service since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStats {
    /// Requests accepted by `submit` (coalesced ones included).
    pub submitted: u64,
    /// Requests that joined an identical queued request instead of computing.
    pub coalesced: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    /// Computations started (prefilled).
    pub started: u64,
    pub finished: u64,
    pub cancelled: u64,
    pub failed: u64,
    /// Tokens generated over all sequences.
    pub decode_steps: u64,
    /// Rounds of decoding: each gives every active sequence one token in one batched model
    /// pass (so `decode_steps / decode_rounds` is the mean batch size).
    pub decode_rounds: u64,
    /// Time the worker spent in those rounds (sampling included, prefills not), in ms.
    pub decode_ms: f64,
    /// Requests queued or running now, and the most there ever were.
    pub in_flight: usize,
    pub peak_in_flight: usize,
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub max_active: usize,
    /// Subscribers dropped because they stopped reading (their event buffer was full).
    pub stalled: u64,
    pub caches: CacheReport,
}

/// A queued request and everyone waiting for its events.
struct Job {
    req: ValidRequest,
    submitted: Instant,
    subs: Mutex<Vec<mpsc::Sender<Event>>>,
}

impl Job {
    /// Sends an event to every subscriber still listening, dropping those that went away or
    /// whose buffer is full (they stopped reading); returns (anyone left, stalled ones dropped).
    fn broadcast(&self, ev: &Event) -> (bool, u64) {
        let mut subs = lock(&self.subs);
        let mut stalled = 0;
        subs.retain(|s| match s.try_send(ev.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                stalled += 1;
                false
            }
            Err(TrySendError::Closed(_)) => false,
        });
        (!subs.is_empty(), stalled)
    }

    fn abandoned(&self) -> bool {
        lock(&self.subs).iter().all(|s| s.is_closed())
    }
}

/// What the handles and the worker share.
struct State {
    pending: Mutex<HashMap<u64, Arc<Job>>>,
    stats: Mutex<EngineStats>,
    in_flight: AtomicUsize,
    changed: watch::Sender<u64>,
}

impl State {
    fn update(&self, f: impl FnOnce(&mut EngineStats)) {
        f(&mut lock(&self.stats));
        self.changed.send_modify(|v| *v += 1);
    }

    fn job_done(&self, f: impl FnOnce(&mut EngineStats)) {
        let now = self.in_flight.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        self.update(|s| {
            s.in_flight = now;
            f(s)
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The events of one request. Dropping it (or [`EventStream::cancel`]) withdraws this
/// subscriber; when no subscriber is left the computation stops before its next step.
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    coalesced: bool,
}

impl EventStream {
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Waits for the next event on this (non-async) thread; None when the stream ended. Must
    /// not be called from inside an async runtime.
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// An event already delivered, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Stops listening; the computation stops if nobody else listens.
    pub fn cancel(&mut self) {
        self.rx.close();
    }

    /// Whether this request joined an identical one already queued.
    pub fn coalesced(&self) -> bool {
        self.coalesced
    }

    /// A stream that yields `events` and ends (tests of what consumes a stream).
    #[cfg(test)]
    pub(crate) fn replaying(events: Vec<Event>) -> Self {
        let (tx, rx) = mpsc::channel(events.len().max(1));
        for e in events {
            let _ = tx.try_send(e);
        }
        Self { rx, coalesced: false }
    }
}

impl futures_core::Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// A cloneable handle to the engine's worker.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Arc<Job>>,
    state: Arc<State>,
    limits: RequestLimits,
    capacity: usize,
    subscriber_buffer: usize,
    /// The engine's video processor settings (which frames of a video file it takes).
    video: VideoConfig,
}

impl EngineHandle {
    /// Moves the engine onto its own worker thread.
    pub fn spawn(engine: Engine) -> Result<Self> {
        let cfg = engine.config().clone();
        let video = engine.video_config().clone();
        let capacity = cfg.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let stats = EngineStats {
            queue_capacity: capacity,
            max_batch: cfg.max_batch.max(1),
            max_active: cfg.max_active.max(cfg.max_batch).max(1),
            ..Default::default()
        };
        let state = Arc::new(State {
            pending: Mutex::new(HashMap::new()),
            stats: Mutex::new(stats),
            in_flight: AtomicUsize::new(0),
            changed: watch::channel(0).0,
        });
        let worker_state = state.clone();
        std::thread::Builder::new()
            .name("screenpilot-engine".into())
            .spawn(move || Worker { engine, rx, state: worker_state, active: Vec::new(), rounds: 0 }.run())
            .map_err(|e| EngineError::Io(format!("cannot start the engine thread: {e}")))?;
        Ok(Self { tx, state, limits: cfg.limits, capacity, subscriber_buffer: cfg.subscriber_buffer.max(16), video })
    }

    /// The video processor settings of the engine's model: a caller that decodes video files
    /// itself (the server, off the worker thread) samples the frames the engine would.
    pub fn video_config(&self) -> &VideoConfig {
        &self.video
    }

    /// Whether a request is within the engine's limits, without taking it (no copy, no
    /// fingerprint): for refusing a request before costly work such as decoding its images.
    pub fn check(&self, request: &Request) -> Result<()> {
        crate::request::check(request, &self.limits)
    }

    /// Checks a request against the engine's limits.
    pub fn validate(&self, request: Request) -> Result<ValidRequest> {
        ValidRequest::new(request, &self.limits)
    }

    /// Queues a request and returns its events; fails at once with [`EngineError::Busy`] when
    /// the queue is full. An identical request still queued is joined instead.
    pub fn submit(&self, req: ValidRequest) -> Result<EventStream> {
        let (tx, rx) = mpsc::channel(self.subscriber_buffer);
        let fp = req.fingerprint();
        let mut pending = lock(&self.state.pending);
        if let Some(job) = pending.get(&fp).filter(|j| j.req == req) {
            lock(&job.subs).push(tx);
            self.state.update(|s| {
                s.submitted += 1;
                s.coalesced += 1;
            });
            return Ok(EventStream { rx, coalesced: true });
        }
        let job = Arc::new(Job { req, submitted: Instant::now(), subs: Mutex::new(vec![tx]) });
        let now = self.state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        match self.tx.try_send(job.clone()) {
            Ok(()) => {
                pending.insert(fp, job);
                self.state.update(|s| {
                    s.submitted += 1;
                    s.in_flight = now;
                    s.peak_in_flight = s.peak_in_flight.max(now);
                });
                Ok(EventStream { rx, coalesced: false })
            }
            Err(e) => {
                self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => {
                        self.state.update(|s| s.rejected += 1);
                        Err(EngineError::Busy { capacity: self.capacity })
                    }
                    TrySendError::Closed(_) => Err(EngineError::Stopped),
                }
            }
        }
    }

    pub fn stats(&self) -> EngineStats {
        lock(&self.state.stats).clone()
    }

    /// Waits until `pred` holds for the stats (checked after every change).
    pub async fn wait_for(&self, pred: impl Fn(&EngineStats) -> bool) {
        let mut rx = self.state.changed.subscribe();
        while !pred(&self.stats()) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Runs engine work, turning a panic (a bug) into an error for this request only.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(EngineError::Model("internal error while computing this request".into())))
}

struct Active {
    job: Arc<Job>,
    seq: Sequence,
    failed: bool,
    /// The round this sequence last advanced in (0: not yet, so it goes first).
    last_round: u64,
}

struct Worker {
    engine: Engine,
    rx: mpsc::Receiver<Arc<Job>>,
    state: Arc<State>,
    active: Vec<Active>,
    rounds: u64,
}

impl Worker {
    fn run(mut self) {
        let cfg = self.engine.config();
        let max_active = cfg.max_active.max(cfg.max_batch).max(1);
        let mut open = true;
        loop {
            // Admit queued requests: any number while idle, one per round while decoding.
            let mut admitted = 0;
            while open && self.active.len() < max_active && (self.active.is_empty() || admitted == 0) {
                let job = if self.active.is_empty() {
                    match self.rx.blocking_recv() {
                        Some(j) => j,
                        None => {
                            open = false;
                            break;
                        }
                    }
                } else {
                    match self.rx.try_recv() {
                        Ok(j) => j,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                };
                admitted += 1;
                self.admit(job);
            }
            if self.active.is_empty() {
                if !open {
                    return;
                }
                continue;
            }
            self.round();
        }
    }

    /// Takes a job off the queue and prefills it, unless every client of it has gone.
    fn admit(&mut self, job: Arc<Job>) {
        {
            let mut pending = lock(&self.state.pending);
            if pending.get(&job.req.fingerprint()).is_some_and(|j| Arc::ptr_eq(j, &job)) {
                pending.remove(&job.req.fingerprint());
            }
        }
        if job.abandoned() {
            self.state.job_done(|s| s.cancelled += 1);
            return;
        }
        let started = guard(|| self.engine.start(&job.req, job.submitted));
        match started {
            Ok(seq) => {
                let caches = self.engine.cache_report();
                self.state.update(|s| {
                    s.started += 1;
                    s.caches = caches;
                });
                self.active.push(Active { job, seq, failed: false, last_round: 0 });
            }
            Err(e) => {
                self.broadcast(&job, &Event::Error(e));
                self.state.job_done(|s| s.failed += 1);
            }
        }
    }

    /// Sends an event to a job's subscribers, counting those dropped for not reading; false
    /// when nobody listens any more.
    fn broadcast(&self, job: &Job, ev: &Event) -> bool {
        let (listening, stalled) = job.broadcast(ev);
        if stalled > 0 {
            self.state.update(|s| s.stalled += stalled);
        }
        listening
    }

    /// The indices of the sequences to advance this round: at most `max_batch` of the live
    /// ones, those that advanced longest ago first (new ones before all others).
    fn pick_batch(&self) -> Vec<usize> {
        let max_batch = self.engine.config().max_batch.max(1);
        let mut live: Vec<usize> =
            (0..self.active.len()).filter(|&i| self.active[i].seq.finished().is_none()).collect();
        live.sort_by_key(|&i| self.active[i].last_round);
        live.truncate(max_batch);
        live.sort_unstable();
        live
    }

    /// One token for each sequence of this round's batch, all fed to the model in one batched
    /// pass; then the finished ones are retired. A request nobody listens to any more is
    /// cancelled first.
    fn round(&mut self) {
        let start = Instant::now();
        self.rounds += 1;
        for a in &mut self.active {
            if a.job.abandoned() {
                a.seq.cancel();
            }
        }
        let batch = self.pick_batch();
        let engine = &mut self.engine;
        let mut seqs: Vec<&mut Sequence> = self
            .active
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| batch.binary_search(i).is_ok())
            .map(|(_, a)| &mut a.seq)
            .collect();
        // A panic (a bug) inside the batched step fails every sequence of the batch.
        let results = guard(|| Ok(engine.step_batch(&mut seqs))).unwrap_or_else(|e| vec![Err(e); batch.len()]);
        let mut steps = 0;
        for (&i, result) in batch.iter().zip(results) {
            self.active[i].last_round = self.rounds;
            match result {
                Ok(Some(tok)) => {
                    steps += 1;
                    if !self.broadcast(&self.active[i].job, &Event::Token(tok)) {
                        self.active[i].seq.cancel();
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.broadcast(&self.active[i].job, &Event::Error(e));
                    self.active[i].failed = true;
                }
            }
        }
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        self.state.update(|s| {
            s.decode_steps += steps;
            s.decode_rounds += 1;
            s.decode_ms += elapsed;
        });
        let (done, running): (Vec<Active>, Vec<Active>) =
            std::mem::take(&mut self.active).into_iter().partition(|a| a.failed || a.seq.finished().is_some());
        self.active = running;
        for a in done {
            self.retire(a);
        }
    }

    fn retire(&mut self, a: Active) {
        if a.failed {
            self.state.job_done(|s| s.failed += 1);
            return;
        }
        let job = a.job;
        let mut stalled = 0;
        let c = self.engine.finish(a.seq, &mut |ev| {
            stalled += job.broadcast(ev).1;
        });
        let caches = self.engine.cache_report();
        self.state.job_done(|s| {
            s.caches = caches;
            s.stalled += stalled;
            if c.finish == FinishReason::Cancelled {
                s.cancelled += 1;
            } else {
                s.finished += 1;
            }
        });
    }
}
