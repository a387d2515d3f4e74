//! The app's engine-backed assistant on the tiny random model (tests/fixtures/tiny): a
//! follow-up about the same capture, asked through the session the way the app asks it, takes
//! the image's features from the vision cache and the earlier turn's KV from the prefix cache,
//! and still gives exactly the tokens a fresh engine gives; `Flow::Stop` ends an answer early
//! without disturbing the next one.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use screenpilot_agent::{CaptureGeometry, InputSpace, MonitorGeometry, OsPoint, Screenshot};
use screenpilot_desktop::assistant::{AskRequest, Assistant};
use screenpilot_desktop::engine_assistant::{EngineAssistant, LoadOptions};
use screenpilot_desktop::DesktopError;
use screenpilot_desktop::session::{Session, DEFAULT_MAX_TOKENS};
use screenpilot_model::Flow;

fn tiny() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny");
    assert!(dir.join("tokenizer.json").is_file(), "run scripts/setup.sh to fetch the tokenizer");
    dir
}

/// A 160x120 capture with a pattern (so the vision tower sees something non-uniform).
fn screenshot() -> Screenshot {
    let (w, h) = (160, 120);
    let image = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 11 % 256) as u8, ((x + y) * 3 % 256) as u8]));
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: w, height: h, scale_factor: 1.0, input_space: InputSpace::Physical };
    Screenshot { image: Arc::new(image), geometry: CaptureGeometry::full_monitor(m, w, h).unwrap() }
}

#[test]
fn a_follow_up_reuses_the_capture_and_matches_a_fresh_engine() {
    let warm: Arc<dyn Assistant> = Arc::new(EngineAssistant::load(&tiny(), None).unwrap());
    assert_eq!((warm.info().device.as_str(), warm.info().dtype.as_str()), ("cpu", "f32"));
    let session = Session::new();
    session.set_assistant(Arc::clone(&warm));
    let shot = screenshot();
    session.set_capture(shot.clone());

    let first = session.ask("What is on this screen?", &mut |_| {}).unwrap();
    assert!(!first.cancelled && !first.token_ids.is_empty());
    assert_eq!((first.timings.engine.images, first.timings.engine.vision_cache_hits, first.timings.engine.cached_prompt_tokens), (1, 0, 0));

    let mut streamed = String::new();
    let second = session.ask("Which window has the focus?", &mut |p| streamed.push_str(p)).unwrap();
    assert_eq!(streamed, second.text, "the whole answer was streamed");
    let t = &second.timings.engine;
    assert_eq!((t.images, t.vision_cache_hits), (1, 1), "the capture's features come from the vision cache");
    assert!(
        t.cached_prompt_tokens >= first.timings.engine.prompt_tokens - 1 && t.cached_prompt_tokens < t.prompt_tokens,
        "the first turn ({} tokens) is reused: {t:?}",
        first.timings.engine.prompt_tokens
    );
    let cache = second.cache.unwrap();
    assert_eq!((cache.vision.hits, cache.vision.misses), (1, 1));
    assert_eq!(cache.prefix.hits, 1);

    // The same conversation on a fresh engine: nothing cached, the same tokens.
    let cold = EngineAssistant::load(&tiny(), None).unwrap();
    let history = session.history();
    assert_eq!(history.len(), 2);
    let images = [shot.image.as_ref()];
    let req = AskRequest { images: &images, clip: None, history: &history[..1], question: "Which window has the focus?", max_tokens: DEFAULT_MAX_TOKENS };
    let fresh = cold.ask(&req, &mut |_| Flow::Continue).unwrap();
    assert_eq!((fresh.timings.engine.vision_cache_hits, fresh.timings.engine.cached_prompt_tokens), (0, 0));
    assert_eq!(fresh.timings.engine.prompt_tokens, t.prompt_tokens);
    assert_eq!(fresh.token_ids, second.token_ids, "cached and cold runs give the same tokens");
    assert_eq!(fresh.text, second.text);
}

#[test]
fn flow_stop_ends_the_answer_early_and_the_next_answer_is_unaffected() {
    let a = EngineAssistant::load(&tiny(), None).unwrap();
    let shot = screenshot();
    let images = [shot.image.as_ref()];
    let req = AskRequest { images: &images, clip: None, history: &[], question: "Describe the screen.", max_tokens: 48 };

    let mut pieces = Vec::new();
    let stopped = a
        .ask(&req, &mut |p| {
            pieces.push(p.to_string());
            if pieces.len() == 2 { Flow::Stop } else { Flow::Continue }
        })
        .unwrap();
    assert!(stopped.cancelled);
    assert_eq!(pieces.len(), 2, "no piece after Stop");
    // Each of these tokens releases text, so Stop on the second piece means two tokens.
    assert_eq!(stopped.token_ids.len(), 2, "stopped within one decode step");
    assert_eq!(stopped.text, pieces.concat());

    let full = a.ask(&req, &mut |_| Flow::Continue).unwrap();
    assert!(!full.cancelled);
    assert!(
        full.token_ids.len() > stopped.token_ids.len() + 2,
        "stopped after {} of {} tokens",
        stopped.token_ids.len(),
        full.token_ids.len()
    );
    assert!(full.token_ids.starts_with(&stopped.token_ids), "a stopped answer is a prefix of the full one");
    assert_eq!(full.timings.engine.vision_cache_hits, 1);

    // The full answer after a cancelled one equals a cold engine's.
    let cold = EngineAssistant::load(&tiny(), None).unwrap().ask(&req, &mut |_| Flow::Continue).unwrap();
    assert_eq!(cold.token_ids, full.token_ids);
}

#[test]
fn questions_and_tasks_share_one_engine_and_a_raised_stop_flag_abandons_a_task_answer() {
    use screenpilot_agent::StopFlag;
    use screenpilot_desktop::engine_assistant::StoppableLocal;
    use screenpilot_engine::backend::Backend;
    use screenpilot_engine::{ChatMessage, ContentPart, EngineError, GenerationOptions, ImageSource, Request, Role};

    let a = EngineAssistant::load(&tiny(), None).unwrap();
    let handle = a.engine().expect("the engine assistant has an engine");
    let shot = screenshot();
    let images = [shot.image.as_ref()];
    let req = AskRequest { images: &images, clip: None, history: &[], question: "Describe the screen.", max_tokens: 8 };
    a.ask(&req, &mut |_| Flow::Continue).unwrap();

    // A task's request about the same screenshot, through the same handle: the vision cache hits.
    let image = Arc::new(image::DynamicImage::ImageRgb8(shot.image.as_ref().clone()));
    let task_request = |max_tokens| Request {
        messages: vec![ChatMessage { role: Role::User, parts: vec![ContentPart::Image(ImageSource::Image(image.clone())), ContentPart::Text("Click OK.".into())] }],
        options: GenerationOptions { max_tokens, ..GenerationOptions::default() },
        tools: Vec::new(),
    };
    let stop = StopFlag::new();
    let local = StoppableLocal::new(handle.clone(), stop.clone());
    let reply = local.chat(task_request(4), &mut |_| {}).unwrap();
    assert!(!reply.text.is_empty());
    assert_eq!(reply.timings.vision_cache_hits, 1, "the task saw the screenshot the question already encoded");
    assert_eq!(a.handle().stats().finished, 2, "both went through the one worker");

    // Raised while the answer streams: the answer is abandoned and the engine drops it.
    let mut pieces = 0;
    let err = local
        .chat(task_request(200), &mut |_| {
            pieces += 1;
            if pieces == 2 {
                stop.raise();
            }
        })
        .unwrap_err();
    assert_eq!(err, EngineError::Stopped);
    assert_eq!(pieces, 2, "no text after the stop");
    let start = std::time::Instant::now();
    while a.handle().stats().cancelled < 1 {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "the engine never dropped the stopped answer");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stats = a.handle().stats();
    assert!(stats.decode_steps < 2 * 8 + 4 + 50, "the stopped answer did not run to its end: {stats:?}");
    // Already raised: refused before anything is generated.
    assert_eq!(local.chat(task_request(4), &mut |_| panic!("no text")).unwrap_err(), EngineError::Stopped);
}

/// A task on the loaded model goes through the same engine handle as the questions: its steps
/// stream the model's text, the screenshot the question encoded is a vision-cache hit, and the
/// Stop ends the task while the model is still writing (the engine drops the answer).
#[test]
fn a_task_on_the_local_model_streams_through_the_shared_engine_and_stops_mid_answer() {
    use screenpilot_agent::{FakeCapture, RecordingActuator};
    use screenpilot_desktop::task_events::TaskEvent;
    use screenpilot_desktop::task_parts::NoWindow;
    use screenpilot_desktop::task_runner::{TaskModel, TaskOptions, TaskRunner, TaskScreen, TaskSpec};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let a = EngineAssistant::load(&tiny(), None).unwrap();
    let shot = screenshot();
    let images = [shot.image.as_ref()];
    a.ask(&AskRequest { images: &images, clip: None, history: &[], question: "What is this?", max_tokens: 4 }, &mut |_| Flow::Continue).unwrap();

    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let audit = std::env::temp_dir().join(format!("sp-task-local-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let options = TaskOptions { max_tokens: 400, hide_settle: Duration::ZERO, ..TaskOptions::default() };
    let sink = Arc::new(move |ev: TaskEvent| drop(tx.lock().unwrap().send(ev)));
    let runner = TaskRunner::new(Box::new(RecordingActuator::default()), &audit, Arc::new(NoWindow), sink, options).unwrap();
    let capture = FakeCapture::new(shot.geometry.clone(), shot.image.as_ref().clone());
    let spec = TaskSpec { task: "Open the menu.".into(), model: TaskModel::Local(a.engine().unwrap()), screen: TaskScreen::Live(Box::new(capture)), one_step: false };
    runner.start(spec).unwrap();
    let mut pieces = 0;
    while pieces < 3 {
        match rx.recv_timeout(Duration::from_secs(60)).expect("the model's text streams") {
            TaskEvent::Text { step: 1, .. } => pieces += 1,
            TaskEvent::Outcome(o) => panic!("ended before it was stopped: {o:?}"),
            _ => {}
        }
    }
    let t0 = Instant::now();
    runner.stop();
    let outcome = loop {
        if let TaskEvent::Outcome(o) = rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            break o;
        }
    };
    assert_eq!(outcome.status, "stopped");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let start = Instant::now();
    while a.handle().stats().cancelled < 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "the engine never dropped the task's answer");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = a.handle().stats();
    assert_eq!((stats.finished, stats.cancelled), (1, 1), "the question and the task went through one worker: {stats:?}");
    assert_eq!(stats.caches.vision.hits, 1, "the task's screenshot was the question's: {stats:?}");
    assert!(stats.decode_steps < 4 + 400, "the task's answer did not run to its end: {stats:?}");
}

#[test]
fn load_with_honours_the_chosen_device_and_precision_and_refuses_what_is_missing() {
    let opts = |device: &str, dtype: &str| LoadOptions { max_image_tokens: Some(64), device: device.into(), dtype: dtype.into(), quant: "none".into() };
    let cpu_bf16 = EngineAssistant::load_with(&tiny(), &opts("cpu", "bf16")).unwrap();
    let info = cpu_bf16.info();
    assert_eq!((info.device.as_str(), info.dtype.as_str()), ("cpu", "bf16"));
    assert_eq!(info.weight_bytes, info.parameters * 2);
    let cpu_auto = EngineAssistant::load_with(&tiny(), &opts("cpu", "auto")).unwrap();
    assert_eq!(cpu_auto.info().dtype, "f32");
    // Quantized: the language model's projections in q8_0 (8.5 bits a weight), the rest in f32.
    let q8 = EngineAssistant::load_with(&tiny(), &LoadOptions { quant: "q8_0".into(), ..opts("cpu", "auto") }).unwrap();
    let info = q8.info();
    assert_eq!(info.dtype, "f32 + q8_0");
    // Weights in memory: the projections as quantized, everything else in f32. (On the tiny model
    // the q8_0 copy of its tied 151936-row head outweighs what its 32-wide layers save.)
    let folder = screenpilot_model::ModelFolder::open(tiny()).unwrap();
    let kernels = screenpilot_model::KernelConfig { quant: Some(screenpilot_model::QuantType::Q8_0), ..Default::default() };
    let proj = screenpilot_model::Qwen3Vl::load_with(&folder, screenpilot_model::DType::F32, &screenpilot_model::Device::Cpu, kernels).unwrap().text.quant_summary();
    assert_eq!(proj.quantized, vec![("q8_0".to_string(), 13)]);
    assert_eq!(info.weight_bytes, (info.parameters - proj.params as u64) * 4 + proj.bytes as u64);
    assert_ne!(info.weight_bytes, cpu_auto.info().weight_bytes);
    let err = EngineAssistant::load_with(&tiny(), &LoadOptions { quant: "q3_k".into(), ..opts("cpu", "auto") }).err().unwrap();
    assert!(matches!(&err, DesktopError::InvalidArgument(m) if m.contains("unknown quantization `q3_k`")), "{err}");
    for (device, dtype, says) in [("tpu", "auto", "device \"tpu\""), ("cpu", "int8", "precision \"int8\"")] {
        let err = EngineAssistant::load_with(&tiny(), &opts(device, dtype)).err().unwrap();
        assert!(matches!(&err, DesktopError::InvalidArgument(m) if m.contains(says)), "{err}");
    }
    if !candle_core::utils::cuda_is_available() {
        let err = EngineAssistant::load_with(&tiny(), &opts("cuda", "auto")).err().unwrap();
        assert!(err.to_string().contains("cuda was chosen but this build has no CUDA support"), "{err}");
    }
    if !candle_core::utils::metal_is_available() {
        let err = EngineAssistant::load_with(&tiny(), &opts("metal", "auto")).err().unwrap();
        assert!(err.to_string().contains("metal was chosen but this build has no Metal support"), "{err}");
    }
    // A wrong folder fails as a bad model before any device is opened.
    let err = EngineAssistant::load_with(std::path::Path::new("/no/such/model"), &opts("cuda", "auto")).err().unwrap();
    assert_eq!(err.kind(), "bad_model", "{err}");
}
