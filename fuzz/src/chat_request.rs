//! Fuzz target: an OpenAI chat-completions body, as `POST /v1/chat/completions` receives it, is
//! parsed (`parse_chat_request`) and validated (`ValidRequest::new`) without panicking, with the
//! server's default settings (no local files). A request that passes validation is within the
//! limits it was checked against.
//!
//! Only std and screenpilot-engine are used: crates/engine/tests/fuzz_regressions.rs includes
//! this file to replay the corpus in `cargo test`.

use std::sync::OnceLock;

use screenpilot_engine::server::parse_chat_request;
use screenpilot_engine::{ContentPart, ImageSource, RequestLimits, ServeConfig, ValidRequest};

fn config() -> &'static ServeConfig {
    static CFG: OnceLock<ServeConfig> = OnceLock::new();
    CFG.get_or_init(ServeConfig::default)
}

/// One input: must not panic.
pub fn run(data: &[u8]) {
    let Ok(request) = parse_chat_request(data, config()) else { return };
    let limits = RequestLimits::default();
    let Ok(valid) = ValidRequest::new(request, &limits) else { return };
    let r = valid.request();
    assert!(!r.messages.is_empty());
    let o = valid.options();
    assert!(o.max_tokens >= 1 && o.max_tokens <= limits.max_tokens, "{o:?}");
    assert!(o.temperature.is_finite() && o.temperature >= 0.0, "{o:?}");
    assert!(o.top_p > 0.0 && o.top_p <= 1.0, "{o:?}");
    assert!(o.stop.len() <= limits.max_stop_strings && o.stop.iter().all(|s| !s.is_empty()), "{o:?}");
    let images: Vec<&ImageSource> = valid.images().collect();
    assert!(images.len() <= limits.max_images);
    let text: usize = r
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .map(|p| if let ContentPart::Text(t) = p { t.len() } else { 0 })
        .sum();
    assert!(text <= limits.max_text_bytes);
    let _ = valid.sampling();
    // Equal requests must have equal fingerprints (they are coalesced on it).
    let again = parse_chat_request(data, config()).ok().and_then(|r| ValidRequest::new(r, &limits).ok());
    assert_eq!(again.map(|v| v.fingerprint()), Some(valid.fingerprint()));
}
