//! Tests of [`super::ThreadStore`]: a fresh folder under the system temp folder per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use image::RgbImage;
use screenpilot_agent::coords::PhysicalRegion;
use screenpilot_agent::{InputSpace, MonitorGeometry, OsPoint};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sp-threads-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A 40x30 region at (100, 50) of a 2x HiDPI monitor left of the primary one, with varied pixels.
fn shot() -> Screenshot {
    let m = MonitorGeometry { name: "DP-1".into(), origin: OsPoint { x: -1920, y: 0 }, width: 3840, height: 2160, scale_factor: 2.0, input_space: InputSpace::Logical };
    let region = PhysicalRegion { x: 100, y: 50, width: 40, height: 30 };
    let g = CaptureGeometry::region(m, region, 40, 30).unwrap();
    let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8]));
    Screenshot { image: Arc::new(img), geometry: g }
}

fn turn(q: &str, at_ms: u64) -> Turn {
    Turn { question: q.into(), answer: format!("answer to {q}"), cancelled: false, at_ms, timings: serde_json::json!({"ttft_ms": 12.5}) }
}

#[test]
fn threads_keep_their_turns_in_order_and_survive_a_reopen() {
    let dir = temp("order");
    let store = ThreadStore::open(&dir).unwrap();
    let a = store.create(&shot(), "DP-1", 1_000).unwrap();
    assert_eq!((a.title.as_str(), a.turns, a.created_ms), ("Capture of DP-1", 0, 1_000));
    assert!(a.bytes > 0);
    let b = store.create(&shot(), "region", 2_000).unwrap();
    assert_ne!(a.id, b.id);
    store.append(&a.id, turn("What is on screen?\nsecond line", 3_000)).unwrap();
    let s = store.append(&a.id, Turn { cancelled: true, timings: serde_json::Value::Null, ..turn("And then?", 4_000) }).unwrap();
    assert_eq!((s.turns, s.updated_ms, s.title.as_str()), (2, 4_000, "What is on screen?"));

    let store = ThreadStore::open(&dir).unwrap(); // a restart
    let ids: Vec<String> = store.list().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![a.id.clone(), b.id.clone()], "the most recently updated first");
    let t = store.load(&a.id).unwrap();
    assert_eq!(t.turns.iter().map(|t| t.question.as_str()).collect::<Vec<_>>(), ["What is on screen?\nsecond line", "And then?"]);
    assert!(t.turns[1].cancelled);
    assert_eq!(t.turns[0].timings["ttft_ms"], 12.5);
    let ex = t.exchanges();
    assert_eq!((ex.len(), ex[0].answer.as_str()), (1, "answer to What is on screen?\nsecond line"), "the cancelled turn is left out");
    assert_eq!(t.geometry, shot().geometry);
    assert_eq!(store.total_bytes(), store.list().iter().map(|t| t.bytes).sum::<u64>());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_screenshot_comes_back_with_its_pixels_and_geometry() {
    let dir = temp("shot");
    let store = ThreadStore::open(&dir).unwrap();
    let original = shot();
    let id = store.create(&original, "region", 5).unwrap().id;
    let (back, png) = ThreadStore::open(&dir).unwrap().capture(&id).unwrap();
    assert_eq!(back.image.as_raw(), original.image.as_raw());
    assert_eq!(back.geometry, original.geometry);
    let p = screenpilot_agent::Point::new(10.0, 5.0);
    assert_eq!(back.geometry.image_to_os(p).unwrap(), original.geometry.image_to_os(p).unwrap());
    assert_eq!(png, std::fs::read(dir.join(&id).join(CAPTURE_FILE)).unwrap());
    // A geometry that does not match the image is refused when creating.
    let mut bad = shot();
    bad.geometry.image_width = 41;
    assert!(store.create(&bad, "x", 6).is_err());
    assert_eq!(store.list().len(), 1, "nothing was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn titles_are_clipped() {
    let dir = temp("title");
    let store = ThreadStore::open(&dir).unwrap();
    let id = store.create(&shot(), "w", 1).unwrap().id;
    let s = store.append(&id, turn(&"é".repeat(200), 2)).unwrap();
    assert_eq!(s.title.chars().count(), TITLE_CHARS);
    assert!(s.title.ends_with('…'));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delete_and_delete_all() {
    let dir = temp("delete");
    let store = ThreadStore::open(&dir).unwrap();
    let a = store.create(&shot(), "a", 1).unwrap().id;
    let b = store.create(&shot(), "b", 2).unwrap().id;
    store.delete(&a).unwrap();
    assert!(!dir.join(&a).exists());
    assert!(store.load(&a).is_err());
    assert!(store.delete(&a).is_err(), "deleting twice says so");
    assert!(store.append(&a, turn("q", 3)).is_err());
    store.create(&shot(), "c", 3).unwrap();
    std::fs::create_dir(dir.join("not a thread")).unwrap();
    assert_eq!(store.delete_all().unwrap(), 2);
    assert!(store.list().is_empty());
    assert!(!dir.join(&b).exists());
    assert!(dir.join("not a thread").exists(), "folders that are not threads are left alone");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cap_evicts_the_least_recently_updated_but_never_the_open_thread() {
    let dir = temp("cap");
    let store = ThreadStore::open(&dir).unwrap();
    let ids: Vec<String> = (0..4).map(|i| store.create(&shot(), "m", 1_000 + i).unwrap().id).collect();
    // Thread 0 is the oldest by creation but was updated last.
    store.append(&ids[0], turn("late", 9_000)).unwrap();
    let sizes: Vec<u64> = ids.iter().map(|id| store.load(id).unwrap().summary.bytes).collect();
    let total = store.total_bytes();
    assert_eq!(total, sizes.iter().sum::<u64>());
    // Room for all but about one thread: thread 1 (oldest update) goes, but it is kept open,
    // so thread 2 goes instead.
    let cap = total - sizes[1] / 2;
    let deleted = store.enforce(cap, 0, 10_000, Some(&ids[1])).unwrap();
    assert_eq!(deleted, vec![ids[2].clone()]);
    assert!(store.total_bytes() <= cap);
    // Without `keep`, thread 1 goes first, then 3.
    let deleted = store.enforce(sizes[0], 0, 10_000, None).unwrap();
    assert_eq!(deleted, vec![ids[1].clone(), ids[3].clone()]);
    assert_eq!(store.list().into_iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[0].clone()]);
    // A cap of 0 empties the store except the open thread.
    assert_eq!(store.enforce(0, 0, 10_000, Some(&ids[0])).unwrap(), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn old_threads_are_pruned_by_age() {
    let dir = temp("age");
    let store = ThreadStore::open(&dir).unwrap();
    let day = 86_400_000u64;
    let now = 100 * day;
    let old = store.create(&shot(), "m", now - 40 * day).unwrap().id;
    let open_old = store.create(&shot(), "m", now - 50 * day).unwrap().id;
    let recent = store.create(&shot(), "m", now - 40 * day).unwrap().id;
    store.append(&recent, turn("q", now - 2 * day)).unwrap(); // updated lately
    assert!(store.enforce(u64::MAX, 0, now, None).unwrap().is_empty(), "0 days keeps everything");
    let deleted = store.enforce(u64::MAX, 30, now, Some(&open_old)).unwrap();
    assert_eq!(deleted, vec![old]);
    let mut left: Vec<String> = store.list().into_iter().map(|t| t.id).collect();
    left.sort();
    let mut want = vec![open_old, recent];
    want.sort();
    assert_eq!(left, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_or_partial_thread_is_skipped_in_the_list() {
    let dir = temp("corrupt");
    let store = ThreadStore::open(&dir).unwrap();
    let good = store.create(&shot(), "m", 1).unwrap().id;
    let bad = store.create(&shot(), "m", 2).unwrap().id;
    std::fs::write(dir.join(&bad).join(THREAD_FILE), "{\"source\": 3").unwrap();
    std::fs::create_dir(dir.join("20200101-000000-000-0000")).unwrap(); // no record at all
    std::fs::write(dir.join("stray-file"), "x").unwrap();
    assert_eq!(store.list().into_iter().map(|t| t.id).collect::<Vec<_>>(), vec![good]);
    assert!(store.load(&bad).is_err());
    assert!(store.capture(&bad).is_err());
    assert!(store.append(&bad, turn("q", 3)).is_err());
    store.delete(&bad).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_that_leave_the_folder_are_rejected() {
    let dir = temp("ids");
    let store = ThreadStore::open(&dir).unwrap();
    std::fs::create_dir_all(dir.join("inner")).unwrap();
    for id in ["../x", "a/b", "", "..", ".", "a\\b", "x y", &"a".repeat(65), "/etc"] {
        assert!(matches!(store.load(id), Err(DesktopError::InvalidArgument(_))), "{id:?}");
        assert!(matches!(store.delete(id), Err(DesktopError::InvalidArgument(_))), "{id:?}");
        assert!(matches!(store.capture(id), Err(DesktopError::InvalidArgument(_))), "{id:?}");
        assert!(matches!(store.append(id, turn("q", 1)), Err(DesktopError::InvalidArgument(_))), "{id:?}");
    }
    assert!(dir.join("inner").exists());
    validate_id(&"a".repeat(64)).unwrap();
    validate_id("20261207-151300-123-0001").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_sort_by_time() {
    assert_eq!(stamp(0), "19700101-000000-000");
    let a = stamp(1_796_656_380_123); // 2026-12-07 15:13:00.123 UTC
    assert_eq!(a, "20261207-151300-123");
    assert!(stamp(1_796_656_380_124) > a);
}

#[cfg(unix)]
#[test]
fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp("perms");
    let _store = ThreadStore::open(&dir).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
}
