//! Fuzzing's regression tests (fuzz/, docs/FUZZING.md): the committed corpora of the
//! `safetensors_config` and `image_decode` targets, and any crash they found, run through the
//! targets' own code (fuzz/src/*.rs) in `cargo test`, without cargo-fuzz or nightly flags.

#[path = "../../../fuzz/src/image_decode.rs"]
mod image_decode;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;
#[path = "../../../fuzz/src/safetensors_config.rs"]
mod safetensors_config;

#[test]
fn safetensors_config_corpus_replays_without_a_panic() {
    let n = replay::replay("safetensors_config", safetensors_config::run);
    safetensors_config::remove_folder();
    assert!(n >= 10, "only {n} inputs: is fuzz/corpus/safetensors_config there?");
}

#[test]
fn image_decode_corpus_replays_without_a_panic() {
    let n = replay::replay("image_decode", image_decode::run);
    assert!(n >= 10, "only {n} inputs: is fuzz/corpus/image_decode there?");
}

/// The largest single allocation of this test binary since the last reset.
struct Peak;

static PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only recording the size asked for.
unsafe impl std::alloc::GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        PEAK.fetch_max(new_size, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

/// Found by image_decode: a 98-byte WebP (a valid 7x5 image) whose EXIF chunk header claims
/// 0xF0000000 bytes made `decode_image_limited` allocate 4 GB (image-webp reads the EXIF chunk
/// for the orientation with no memory limit, and image does not pass its limits on).
#[test]
fn a_webp_exif_chunk_claiming_4_gb_is_not_allocated() {
    let bytes = include_bytes!("../../../fuzz/regressions/image_decode/webp_exif_chunk_claims_4GB.webp");
    let limits = screenpilot_model::preprocess::ImageLimits::default();
    PEAK.store(0, std::sync::atomic::Ordering::Relaxed);
    let _ = screenpilot_model::preprocess::decode_image_limited(bytes, &limits);
    let peak = PEAK.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= 64 << 20, "decoding a 98-byte WebP allocated {peak} bytes at once");
}

/// Found by image_decode in CI: a 1091-byte malformed progressive JPEG makes zune-jpeg 0.5.15
/// (the image crate's JPEG decoder, latest release) fail an assertion in its AVX2 upsampler
/// (`input.len() * 2 <= scratch_space.len()`). `decode_image_limited` catches the decoder's
/// panic: one error for this image, and the caller (a server thread, the app) goes on.
#[test]
fn a_jpeg_that_panics_the_decoder_is_one_decode_error() {
    let bytes = include_bytes!("../../../fuzz/regressions/image_decode/jpeg_progressive_upsampler_assert.jpg");
    let limits = screenpilot_model::preprocess::ImageLimits::default();
    match screenpilot_model::preprocess::decode_image_limited(bytes, &limits) {
        Err(screenpilot_model::preprocess::PreprocessError::Decode(msg)) => {
            assert!(msg.contains("malformed image"), "{msg}")
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    // The same bytes again: nothing was left poisoned by the caught panic.
    assert!(screenpilot_model::preprocess::decode_image_limited(bytes, &limits).is_err());
}
