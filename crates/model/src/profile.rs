//! Opt-in per-stage timing for finding where GPU time goes (`screenpilot bench --profile`).
//! On CUDA a scope records a timing event before and after its work on the stream (no
//! synchronisation: the GPU runs as it does unprofiled) and [`take`] reads the GPU time between
//! them; elsewhere every scope synchronises the device before and after and measures host time,
//! so stage times add up. When off (the default), a scope is one thread-local flag check.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::Device;

thread_local! {
    static STAGES: RefCell<Option<BTreeMap<&'static str, (Duration, u64)>>> = const { RefCell::new(None) };
    /// CUDA stages not read yet: (stage, start event, end event).
    #[cfg(feature = "cuda")]
    static PENDING: RefCell<Vec<(&'static str, cuda::Event, cuda::Event)>> = const { RefCell::new(Vec::new()) };
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{sys::CUevent_flags, CudaEvent};
    use candle_core::Device;

    pub(super) type Event = CudaEvent;

    /// A timing event recorded now on `dev`'s stream (`None` off CUDA or on failure).
    pub(super) fn record(dev: &Device) -> Option<Event> {
        let Device::Cuda(d) = dev else { return None };
        d.cuda_stream().record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).ok()
    }
}

/// Starts (or restarts) collecting on this thread.
pub fn enable() {
    #[cfg(feature = "cuda")]
    PENDING.with(|p| p.borrow_mut().clear());
    STAGES.with(|s| *s.borrow_mut() = Some(BTreeMap::new()));
}

fn add(name: &'static str, d: Duration) {
    STAGES.with(|s| {
        if let Some(m) = s.borrow_mut().as_mut() {
            let e = m.entry(name).or_insert((Duration::ZERO, 0));
            e.0 += d;
            e.1 += 1;
        }
    });
}

/// Stops collecting and returns (stage, total time, calls), largest total first (waits for the
/// GPU to finish the recorded stages).
pub fn take() -> Vec<(&'static str, Duration, u64)> {
    #[cfg(feature = "cuda")]
    for (name, start, end) in PENDING.with(|p| std::mem::take(&mut *p.borrow_mut())) {
        if end.synchronize().is_ok() {
            if let Ok(ms) = start.elapsed_ms(&end) {
                add(name, Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1000.0));
            }
        }
    }
    let map = STAGES.with(|s| s.borrow_mut().take()).unwrap_or_default();
    let mut v: Vec<_> = map.into_iter().map(|(k, (d, n))| (k, d, n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1));
    v
}

pub(crate) fn on() -> bool {
    STAGES.with(|s| s.borrow().is_some())
}

/// Runs `f` as stage `name`.
pub fn scope<T, E>(name: &'static str, dev: &Device, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    if !on() {
        return f();
    }
    #[cfg(feature = "cuda")]
    if let Some(start) = cuda::record(dev) {
        let out = f();
        if let Some(end) = cuda::record(dev) {
            PENDING.with(|p| p.borrow_mut().push((name, start, end)));
        }
        return out;
    }
    let _ = dev.synchronize();
    let t = Instant::now();
    let out = f();
    let _ = dev.synchronize();
    add(name, t.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_counted_only_while_enabled() {
        let dev = Device::Cpu;
        scope("a", &dev, || Ok::<_, ()>(())).unwrap_or(());
        assert!(take().is_empty());
        enable();
        for _ in 0..3 {
            scope("a", &dev, || Ok::<_, ()>(())).unwrap_or(());
        }
        let t = take();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].0, t[0].2), ("a", 3));
        assert!(take().is_empty(), "take() stops collecting");
    }
}
