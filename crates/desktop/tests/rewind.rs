//! Rewind on the tiny random model (tests/fixtures/tiny): a fake screen recorded at 4 frames a
//! second, a question about the last seconds goes to the engine as a video and is answered, a
//! follow-up about the same clip takes its preprocessing and features from the engine's caches,
//! and "what changed" answers about two frames.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use screenpilot_agent::{CaptureGeometry, FakeCapture, InputSpace, MonitorGeometry, OsPoint};
use screenpilot_desktop::assistant::Assistant;
use screenpilot_desktop::engine_assistant::EngineAssistant;
use screenpilot_desktop::rewind::ask::{ask_changed, ask_recent};
use screenpilot_desktop::rewind::blackout::FixedWindows;
use screenpilot_desktop::rewind::{Rewind, RewindConfig};
use screenpilot_desktop::session::Session;

fn tiny() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny");
    assert!(dir.join("tokenizer.json").is_file(), "run scripts/setup.sh to fetch the tokenizer");
    dir
}

/// A 64x48 screen whose pattern moves each frame.
fn screen() -> FakeCapture {
    let (w, h) = (64, 48);
    let frame = |k: u32| RgbImage::from_fn(w, h, |x, y| image::Rgb([((x + 8 * k) * 7 % 256) as u8, (y * 11 % 256) as u8, (k * 40) as u8]));
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: w, height: h, scale_factor: 1.0, input_space: InputSpace::Physical };
    let mut cap = FakeCapture::new(CaptureGeometry::full_monitor(m, w, h).expect("geometry"), frame(0));
    for k in 1..5 {
        cap.push(frame(k));
    }
    cap
}

#[test]
fn the_last_seconds_are_answered_as_a_video_and_a_follow_up_is_cached() {
    let assistant: Arc<dyn Assistant> = Arc::new(EngineAssistant::load(&tiny(), None).expect("tiny model"));
    let session = Session::new();
    session.set_assistant(assistant);
    let rewind = Rewind::new();
    rewind.start(RewindConfig { fps: 4.0, seconds: 2, ..RewindConfig::default() }, Box::new(screen()), Box::new(FixedWindows::default())).expect("start");
    let t0 = Instant::now();
    while rewind.status().seconds < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no frames: {:?}", rewind.status());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut streamed = String::new();
    let first = ask_recent(&session, &rewind, 1.0, "What happened on the screen?", &mut |p| streamed.push_str(p)).expect("answer");
    assert!(!first.cancelled && !first.token_ids.is_empty());
    assert_eq!(streamed, first.text);
    let t = &first.timings.engine;
    assert_eq!((t.images, t.images_preprocessed, t.vision_cache_hits), (1, 1, 0), "one video: {t:?}");
    let second = session.ask("And what is on it now?", &mut |_| {}).expect("follow-up");
    let t = &second.timings.engine;
    assert_eq!((t.images_preprocessed, t.vision_cache_hits), (0, 1), "the same clip: {t:?}");
    assert!(t.cached_prompt_tokens > 0, "{t:?}");

    let changed = ask_changed(&session, &rewind, "What changed?", &mut |_| {}).expect("what changed");
    assert_eq!(changed.timings.engine.images, 2, "two images: before and now");
    rewind.stop();
}
