//! What a caller asks the engine: a conversation (text and images per turn) and generation
//! options, and [`ValidRequest`], the only form the engine accepts, made by checking a
//! [`Request`] against [`RequestLimits`]. A valid request also has a fingerprint used to coalesce
//! identical requests.

use std::path::PathBuf;
use std::sync::Arc;

use image::DynamicImage;
pub use screenpilot_model::prompt::Role;
use screenpilot_model::SamplingParams;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{EngineError, Result};

/// Where an image comes from. Decoding happens on the engine's worker.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// Encoded PNG / JPEG / WebP / BMP / GIF bytes.
    Bytes(Arc<[u8]>),
    /// A local image file.
    Path(PathBuf),
    /// An image already decoded in memory (e.g. a screenshot).
    Image(Arc<DynamicImage>),
}

impl PartialEq for ImageSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ImageSource::Bytes(a), ImageSource::Bytes(b)) => a == b,
            (ImageSource::Path(a), ImageSource::Path(b)) => a == b,
            (ImageSource::Image(a), ImageSource::Image(b)) => Arc::ptr_eq(a, b) || **a == **b,
            _ => false,
        }
    }
}

/// Where a video comes from. Files are decoded, and frames sampled, off the caller's thread.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSource {
    /// A video file (mp4, webm, mkv, ...).
    Path(PathBuf),
    /// The bytes of a video file.
    Bytes(Arc<[u8]>),
    /// A clip's frames in order, `fps` a second (a folder of images, screen captures); the
    /// engine samples them as transformers samples a decoded video.
    Frames { frames: Vec<ImageSource>, fps: f64 },
    /// Frames already decoded and sampled.
    Clip(Arc<Clip>),
}

/// The sampled frames of a video: `frames[i]` is frame `indices[i]` of a video at `fps`
/// frames a second (None: unknown, taken as 24 as transformers does).
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub frames: Vec<Arc<DynamicImage>>,
    pub indices: Vec<usize>,
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContentPart {
    Text(String),
    Image(ImageSource),
    Video(VideoSource),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub parts: Vec<ContentPart>,
}

impl ChatMessage {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self { role, parts: vec![ContentPart::Text(text.into())] }
    }
}

/// How the answer is generated. `temperature == 0` is greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// Candidates kept when sampling (0 = off).
    pub top_k: usize,
    pub seed: u64,
    /// The answer ends before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Keep generating past end-of-answer tokens (for benchmarks and tests).
    pub ignore_eos: bool,
    /// Logits of tokens already in the prompt or the answer are divided by this (multiplied
    /// when negative), as transformers' `repetition_penalty`; 1.0 is off.
    pub repetition_penalty: f64,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop: Vec::new(),
            ignore_eos: false,
            repetition_penalty: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub messages: Vec<ChatMessage>,
    pub options: GenerationOptions,
    /// Function schemas (`{"name", "description", "parameters"}`, or OpenAI's
    /// `{"type": "function", "function": {...}}`), written into the system prompt's tools block
    /// as Qwen's template does. The answer's `<tool_call>` blocks are left in its text.
    pub tools: Vec<serde_json::Value>,
}

/// Bounds a request must respect.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_images: usize,
    pub max_videos: usize,
    /// The most tokens a request may ask for; the engine lowers it to the model's context
    /// length (the default leaves it at that).
    pub max_tokens: usize,
    pub max_stop_strings: usize,
    pub max_text_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_images: 16, max_videos: 4, max_tokens: usize::MAX, max_stop_strings: 8, max_text_bytes: 1 << 20 }
    }
}

/// A request that passed validation; the engine takes nothing else.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    request: Request,
    fingerprint: u64,
}

impl PartialEq for ValidRequest {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.request == other.request
    }
}

impl ValidRequest {
    pub fn new(request: Request, limits: &RequestLimits) -> Result<Self> {
        check(&request, limits)?;
        let fingerprint = fingerprint(&request);
        Ok(Self { request, fingerprint })
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn options(&self) -> &GenerationOptions {
        &self.request.options
    }

    /// A hash of everything that determines the answer (equal requests have equal ones).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn images(&self) -> impl Iterator<Item = &ImageSource> {
        self.request.messages.iter().flat_map(|m| m.parts.iter()).filter_map(|p| match p {
            ContentPart::Image(i) => Some(i),
            _ => None,
        })
    }

    /// The images and videos of the request, in prompt order.
    pub fn visuals(&self) -> impl Iterator<Item = &ContentPart> {
        self.request.messages.iter().flat_map(|m| m.parts.iter()).filter(|p| !matches!(p, ContentPart::Text(_)))
    }

    /// The model's sampling parameters for this request.
    pub fn sampling(&self) -> SamplingParams {
        let o = &self.request.options;
        SamplingParams {
            temperature: o.temperature,
            top_p: o.top_p,
            top_k: o.top_k,
            repetition_penalty: o.repetition_penalty,
            seed: o.seed,
            max_new_tokens: o.max_tokens,
            stop_strings: o.stop.clone(),
        }
    }
}

pub(crate) fn check(r: &Request, limits: &RequestLimits) -> Result<()> {
    let bad = |m: String| Err(EngineError::InvalidRequest(m));
    if r.messages.is_empty() {
        return bad("messages must not be empty".into());
    }
    if r.messages.iter().skip(1).any(|m| m.role == Role::System) {
        return bad("only the first message may be a system message".into());
    }
    let images = r.messages.iter().flat_map(|m| &m.parts).filter(|p| matches!(p, ContentPart::Image(_))).count();
    if images > limits.max_images {
        return bad(format!("{images} images given, at most {} are accepted", limits.max_images));
    }
    let videos = r.messages.iter().flat_map(|m| &m.parts).filter(|p| matches!(p, ContentPart::Video(_))).count();
    if videos > limits.max_videos {
        return bad(format!("{videos} videos given, at most {} are accepted", limits.max_videos));
    }
    let takes_images = |role| matches!(role, Role::User | Role::Tool);
    if r.messages.iter().any(|m| !takes_images(m.role) && m.parts.iter().any(|p| !matches!(p, ContentPart::Text(_)))) {
        return bad("images and videos are only accepted in user and tool messages".into());
    }
    if r.tools.iter().any(|t| !t.is_object()) {
        return bad("every tool must be a JSON object".into());
    }
    let text: usize = r
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .map(|p| match p {
            ContentPart::Text(t) => t.len(),
            ContentPart::Image(_) | ContentPart::Video(_) => 0,
        })
        .sum::<usize>()
        + r.tools.iter().map(|t| t.to_string().len()).sum::<usize>();
    if text > limits.max_text_bytes {
        return bad(format!("the messages hold {text} bytes of text, at most {} are accepted", limits.max_text_bytes));
    }
    check_options(&r.options, limits)
}

fn check_options(o: &GenerationOptions, limits: &RequestLimits) -> Result<()> {
    let bad = |m: String| Err(EngineError::InvalidRequest(m));
    if o.max_tokens == 0 || o.max_tokens > limits.max_tokens {
        return bad(format!("max_tokens must be between 1 and {}", limits.max_tokens));
    }
    if !(o.temperature.is_finite() && o.temperature >= 0.0) {
        return bad("temperature must be a number >= 0".into());
    }
    if !(o.repetition_penalty.is_finite() && o.repetition_penalty > 0.0) {
        return bad("repetition_penalty must be a number > 0".into());
    }
    if !(o.top_p > 0.0 && o.top_p <= 1.0) {
        return bad("top_p must be in (0, 1]".into());
    }
    if o.stop.len() > limits.max_stop_strings {
        return bad(format!("at most {} stop strings are accepted", limits.max_stop_strings));
    }
    if o.stop.iter().any(|s| s.is_empty()) {
        return bad("stop strings must not be empty".into());
    }
    Ok(())
}

fn fingerprint(r: &Request) -> u64 {
    let mut h = Xxh3::new();
    for m in &r.messages {
        h.update(&[m.role as u8, 0xfe]);
        for p in &m.parts {
            match p {
                ContentPart::Text(t) => {
                    h.update(b"T");
                    h.update(&(t.len() as u64).to_le_bytes());
                    h.update(t.as_bytes());
                }
                ContentPart::Image(i) => hash_image_source(&mut h, i),
                ContentPart::Video(v) => hash_video_source(&mut h, v),
            }
        }
    }
    let o = &r.options;
    for v in [
        o.max_tokens as u64,
        o.temperature.to_bits(),
        o.top_p.to_bits(),
        o.top_k as u64,
        o.seed,
        o.ignore_eos as u64,
        o.repetition_penalty.to_bits(),
    ] {
        h.update(&v.to_le_bytes());
    }
    for s in &o.stop {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.update(b"tools");
    for t in &r.tools {
        let json = t.to_string();
        h.update(&(json.len() as u64).to_le_bytes());
        h.update(json.as_bytes());
    }
    h.digest()
}

fn hash_video_source(h: &mut Xxh3, v: &VideoSource) {
    match v {
        VideoSource::Path(p) => {
            h.update(b"VP");
            h.update(p.to_string_lossy().as_bytes());
        }
        VideoSource::Bytes(b) => {
            h.update(b"VB");
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
        VideoSource::Frames { frames, fps } => {
            h.update(b"VF");
            h.update(&fps.to_bits().to_le_bytes());
            h.update(&(frames.len() as u64).to_le_bytes());
            frames.iter().for_each(|f| hash_image_source(h, f));
        }
        VideoSource::Clip(c) => {
            h.update(b"VC");
            h.update(&c.fps.map_or(0, f64::to_bits).to_le_bytes());
            for (i, f) in c.indices.iter().zip(&c.frames) {
                h.update(&(*i as u64).to_le_bytes());
                hash_image_source(h, &ImageSource::Image(f.clone()));
            }
        }
    }
}

fn hash_image_source(h: &mut Xxh3, i: &ImageSource) {
    match i {
        ImageSource::Bytes(b) => {
            h.update(b"B");
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
        ImageSource::Path(p) => {
            h.update(b"P");
            h.update(p.to_string_lossy().as_bytes());
        }
        ImageSource::Image(img) => {
            h.update(b"I");
            h.update(&img.width().to_le_bytes());
            h.update(&img.height().to_le_bytes());
            h.update(format!("{:?}", img.color()).as_bytes());
            h.update(img.as_bytes());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ask(text: &str) -> Request {
        Request { messages: vec![ChatMessage::text(Role::User, text)], ..Default::default() }
    }

    #[test]
    fn bad_options_are_rejected_with_a_reason() {
        let limits = RequestLimits::default();
        let mut r = ask("hi");
        r.options.max_tokens = 0;
        assert!(
            matches!(ValidRequest::new(r, &limits), Err(EngineError::InvalidRequest(m)) if m.contains("max_tokens"))
        );
        let mut r = ask("hi");
        r.options.top_p = 0.0;
        assert!(ValidRequest::new(r, &limits).is_err());
        let mut r = ask("hi");
        r.options.temperature = f64::NAN;
        assert!(ValidRequest::new(r, &limits).is_err());
        assert!(ValidRequest::new(Request::default(), &limits).is_err());
    }

    #[test]
    fn images_outside_user_turns_and_too_many_images_are_rejected() {
        let img = ContentPart::Image(ImageSource::Bytes(Arc::from(&b"x"[..])));
        let limits = RequestLimits { max_images: 1, ..Default::default() };
        let mut r = ask("hi");
        r.messages.push(ChatMessage { role: Role::Assistant, parts: vec![img.clone()] });
        assert!(ValidRequest::new(r, &limits).is_err());
        let mut r = ask("hi");
        r.messages[0].parts.extend([img.clone(), img]);
        assert!(ValidRequest::new(r, &limits).is_err());
    }

    #[test]
    fn fingerprints_differ_when_anything_that_changes_the_answer_differs() {
        let limits = RequestLimits::default();
        let a = ValidRequest::new(ask("hi"), &limits).unwrap();
        let b = ValidRequest::new(ask("hi"), &limits).unwrap();
        assert_eq!(a, b);
        let mut r = ask("hi");
        r.options.seed = 1;
        let c = ValidRequest::new(r, &limits).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        let d = ValidRequest::new(ask("hj"), &limits).unwrap();
        assert_ne!(a.fingerprint(), d.fingerprint());
        let mut r = ask("hi");
        r.tools.push(serde_json::json!({"name": "f"}));
        let e = ValidRequest::new(r, &limits).unwrap();
        assert_ne!(a.fingerprint(), e.fingerprint());
    }

    #[test]
    fn tools_must_be_objects_and_count_as_text_and_tool_results_may_hold_images() {
        let small = RequestLimits { max_text_bytes: 64, ..Default::default() };
        let mut r = ask("hi");
        r.tools.push(serde_json::json!("f"));
        assert!(matches!(ValidRequest::new(r, &small), Err(EngineError::InvalidRequest(m)) if m.contains("tool")));
        let mut r = ask("hi");
        r.tools.push(serde_json::json!({"name": "f", "description": "x".repeat(64)}));
        assert!(matches!(ValidRequest::new(r, &small), Err(EngineError::InvalidRequest(m)) if m.contains("bytes")));
        let mut r = ask("hi");
        let img = ContentPart::Image(ImageSource::Bytes(Arc::from(&b"x"[..])));
        r.messages.push(ChatMessage::text(Role::Assistant, "<tool_call>{}</tool_call>"));
        r.messages.push(ChatMessage { role: Role::Tool, parts: vec![img] });
        assert!(ValidRequest::new(r, &small).is_ok());
    }
}
