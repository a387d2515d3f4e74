//! Opt-in per-stage timing for finding where GPU time goes (`screenpilot bench --profile`).
//! When on, every scope synchronises the device before and after, so stage times add up; when
//! off (the default), a scope is one thread-local flag check.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::Device;

thread_local! {
    static STAGES: RefCell<Option<BTreeMap<&'static str, (Duration, u64)>>> = const { RefCell::new(None) };
}

/// Starts (or restarts) collecting on this thread.
pub fn enable() {
    STAGES.with(|s| *s.borrow_mut() = Some(BTreeMap::new()));
}

/// Stops collecting and returns (stage, total time, calls), largest total first.
pub fn take() -> Vec<(&'static str, Duration, u64)> {
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
    let _ = dev.synchronize();
    let t = Instant::now();
    let out = f();
    let _ = dev.synchronize();
    let d = t.elapsed();
    STAGES.with(|s| {
        if let Some(m) = s.borrow_mut().as_mut() {
            let e = m.entry(name).or_insert((Duration::ZERO, 0));
            e.0 += d;
            e.1 += 1;
        }
    });
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
