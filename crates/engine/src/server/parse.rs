//! Turning an OpenAI chat-completions body into an engine [`Request`]: messages whose content
//! is a string or a list of `text` / `image_url` / `video_url` parts (videos as vLLM takes
//! them), images and videos as base64 `data:` URIs or local files (`file://` or a plain absolute
//! path, only when the server allows folders), and the generation options. Every problem is a message for a 400 response. Fields the engine does
//! not implement (`logprobs`, `response_format`, penalties, `n > 1`, the legacy `functions` /
//! `function_call`, ...) and unknown fields are refused by name rather than silently ignored;
//! their default values, and a few fields that change nothing (`user`, `metadata`, ...), are
//! accepted.
//!
//! Function calling ([`super::tools`]): `tools` (functions only), `tool_choice` `"auto"` /
//! `"none"` / null (`"required"` and a named function are refused) and `parallel_tool_calls`
//! (accepted, not enforced) are read; a `tool` message (text and images; its `tool_call_id` is
//! ignored) is a tool result, and an assistant message's `tool_calls` are written after its
//! content as Qwen's chat template writes them.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::tools::{parse_tools, tool_calls_text, tools_rendered};
use super::ServeConfig;
use crate::load::SamplingChoice;
use crate::request::{ChatMessage, ContentPart, GenerationOptions, ImageSource, Request, Role, VideoSource};

/// The fields of a chat-completions body that the engine uses (others: see [`check_fields`]).
#[derive(Debug, Deserialize)]
pub(crate) struct ChatBody {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<MessageBody>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub stop: Option<Value>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// vLLM's extension; > 0 (see `check_fields`).
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    /// Checked by [`parse_tools`].
    #[serde(default)]
    pub tools: Option<Value>,
    /// Checked by [`tools_rendered`].
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Whether several calls may come in one answer: accepted, not enforced (checked in
    /// `check_fields`).
    #[serde(default)]
    #[allow(dead_code)]
    pub parallel_tool_calls: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageBody {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
    /// A participant's name: changes nothing here, accepted for compatibility.
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
    /// An assistant turn's calls (see [`tool_calls_text`]).
    #[serde(default)]
    pub tool_calls: Option<Value>,
    /// Which call a `tool` message answers: not part of Qwen's prompt, accepted and ignored.
    #[serde(default)]
    pub tool_call_id: Option<Value>,
    /// Fields of OpenAI's assistant messages that a client may send back; only null (and no
    /// annotations) is accepted.
    #[serde(default)]
    pub refusal: Option<Value>,
    #[serde(default)]
    pub function_call: Option<Value>,
    #[serde(default)]
    pub audio: Option<Value>,
    #[serde(default)]
    pub annotations: Option<Value>,
}

/// Fields [`ChatBody`] reads.
const USED: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "ignore_eos",
    "tools",
    "tool_choice",
];

/// Fields that change nothing about the answer.
const HARMLESS: &[&str] = &["user", "metadata", "store", "service_tier"];

/// Refuses, by name, every top-level field that would change the answer in a way the engine
/// does not implement, and every unknown field. A field given its default value is accepted.
fn check_fields(body: &Map<String, Value>) -> Result<(), String> {
    for (name, v) in body {
        let n = name.as_str();
        let accepted = match n {
            _ if USED.contains(&n) || HARMLESS.contains(&n) => true,
            "logprobs" => v.is_null() || v == &Value::Bool(false),
            "top_logprobs" => v.is_null() || v.as_u64() == Some(0),
            "logit_bias" => v.is_null() || v.as_object().is_some_and(Map::is_empty),
            "presence_penalty" | "frequency_penalty" => v.is_null() || v.as_f64() == Some(0.0),
            "response_format" => v.is_null() || v == &serde_json::json!({"type": "text"}),
            // The legacy form of `tools` / `tool_choice`.
            "functions" => v.is_null() || v.as_array().is_some_and(Vec::is_empty),
            "function_call" => v.is_null() || v.as_str() == Some("none"),
            "parallel_tool_calls" if v.is_null() || v.is_boolean() => true,
            "parallel_tool_calls" => return Err(format!("`parallel_tool_calls` must be true or false (given: {v})")),
            "best_of" => v.is_null() || v.as_u64() == Some(1),
            "modalities" => v.is_null() || v.as_array().is_some_and(|m| m.iter().all(|x| x == "text")),
            "audio" | "prediction" | "web_search_options" => v.is_null(),
            // vLLM's extension, read by ChatBody; checked here so a bad value is named.
            "repetition_penalty" if v.is_null() || v.as_f64().is_some_and(|p| p.is_finite() && p > 0.0) => true,
            "repetition_penalty" => return Err(format!("`repetition_penalty` must be a number > 0 (given: {v})")),
            _ => return Err(format!("unknown field `{n}` in the request")),
        };
        if !accepted {
            return Err(format!("`{n}` is not supported by this server (given: {v})"));
        }
    }
    Ok(())
}

/// Parses and converts a body; errors are messages for the client.
pub(crate) fn parse_body(bytes: &[u8], cfg: &ServeConfig) -> Result<(ChatBody, Request), String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not a valid chat request: {e}"))?;
    let Value::Object(fields) = &value else {
        return Err("the body is not a valid chat request: it must be a JSON object".into());
    };
    check_fields(fields)?;
    let body: ChatBody =
        serde_json::from_value(value).map_err(|e| format!("the body is not a valid chat request: {e}"))?;
    if body.n.is_some_and(|n| n != 1) {
        return Err("`n` must be 1: one answer per request is supported".into());
    }
    let messages = body.messages.iter().enumerate().map(|(i, m)| message(i, m, cfg)).collect::<Result<Vec<_>, _>>()?;
    let stop = match &body.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from).ok_or("stop must be a string or a list of strings"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("stop must be a string or a list of strings".into()),
    };
    // The folder's generation_config.json fills what the request leaves out, as for `ask`.
    let choice = SamplingChoice {
        greedy: false,
        temperature: body.temperature,
        top_p: body.top_p,
        top_k: body.top_k,
        repetition_penalty: body.repetition_penalty,
        seed: body.seed.unwrap_or(0) as u64,
        max_tokens: body.max_completion_tokens.or(body.max_tokens).unwrap_or(cfg.default_max_tokens),
        stop,
    };
    let options = GenerationOptions { ignore_eos: body.ignore_eos.unwrap_or(false), ..cfg.sampling_defaults.options(&choice) };
    let tools = parse_tools(body.tools.as_ref())?;
    let tools = if tools_rendered(body.tool_choice.as_ref())? { tools } else { Vec::new() };
    Ok((body, Request { messages, options, tools }))
}

fn message(i: usize, m: &MessageBody, cfg: &ServeConfig) -> Result<ChatMessage, String> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(format!("messages[{i}]: unsupported role {other:?} (use system, user, assistant or tool)"))
        }
    };
    let given = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    let checks = [
        ("tool_calls", role == Role::Assistant || !given(&m.tool_calls)),
        ("tool_call_id", role == Role::Tool || !given(&m.tool_call_id)),
        ("refusal", !given(&m.refusal)),
        ("function_call", !given(&m.function_call)),
        ("audio", !given(&m.audio)),
        ("annotations", m.annotations.as_ref().is_none_or(|a| a.is_null() || a.as_array().is_some_and(Vec::is_empty))),
    ];
    if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(format!("messages[{i}]: `{field}` is not supported on a message with role {:?}", m.role));
    }
    let mut parts = match &m.content {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part(p, cfg).map_err(|e| format!("messages[{i}].content[{j}]: {e}")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("messages[{i}].content must be a string or a list of parts")),
    };
    if let Some(calls) = &m.tool_calls {
        let content = parts.iter().any(|p| !matches!(p, ContentPart::Text(t) if t.is_empty()));
        let text = tool_calls_text(calls, content).map_err(|e| format!("messages[{i}]: {e}"))?;
        if !text.is_empty() {
            parts.push(ContentPart::Text(text));
        }
    }
    Ok(ChatMessage { role, parts })
}

fn part(p: &Value, cfg: &ServeConfig) -> Result<ContentPart, String> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => p
            .get("text")
            .and_then(Value::as_str)
            .map(|t| ContentPart::Text(t.to_string()))
            .ok_or_else(|| "a text part needs a string `text`".into()),
        Some("image_url") => {
            let url = p.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
            let url = url.ok_or("an image_url part needs `image_url: {url: ...}`")?;
            image_source(url, cfg).map(ContentPart::Image)
        }
        Some("video_url") => {
            let url = p.get("video_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
            let url = url.ok_or("a video_url part needs `video_url: {url: ...}`")?;
            let video = match media_source(url, cfg, Media::Video)? {
                Located::Bytes(b) => VideoSource::Bytes(b),
                Located::Path(p) => VideoSource::Path(p),
            };
            Ok(ContentPart::Video(video))
        }
        Some(other) => Err(format!("unsupported part type {other:?} (use text, image_url or video_url)")),
        None => Err("every part needs a `type`".into()),
    }
}

/// A `data:` URI with base64 image bytes, a `file://` URL or a plain local path.
pub(crate) fn image_source(url: &str, cfg: &ServeConfig) -> Result<ImageSource, String> {
    Ok(match media_source(url, cfg, Media::Image)? {
        Located::Bytes(b) => ImageSource::Bytes(b),
        Located::Path(p) => ImageSource::Path(p),
    })
}

#[derive(Clone, Copy)]
enum Media {
    Image,
    Video,
}

enum Located {
    Bytes(Arc<[u8]>),
    Path(PathBuf),
}

/// The bytes of a base64 `data:` URI, or the path of a `file://` URL or plain local path.
fn media_source(url: &str, cfg: &ServeConfig, media: Media) -> Result<Located, String> {
    let (what, example) = match media {
        Media::Image => ("image", "data:image/png;base64,..."),
        Media::Video => ("video", "data:video/mp4;base64,..."),
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or("a data: URI needs a comma before its data")?;
        if !meta.ends_with(";base64") {
            return Err(format!("only base64 data: URIs are supported ({example})"));
        }
        let clean: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean.as_bytes())
            .map_err(|e| format!("the data: URI is not valid base64: {e}"))?;
        return Ok(Located::Bytes(Arc::from(bytes)));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(format!("remote {what} URLs are not fetched: send the {what} as a data: URI"));
    }
    let path = match url.strip_prefix("file://") {
        Some(p) => p.strip_prefix("localhost").unwrap_or(p),
        None => url,
    };
    if cfg.allowed_dirs.is_empty() {
        return Err(format!("local {what} files are not allowed by this server (see --allow-local-files): send a data: URI"));
    }
    if path.is_empty() {
        return Err(format!("empty {what} URL"));
    }
    Ok(Located::Path(PathBuf::from(path)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::load::GenerationDefaults;

    #[test]
    fn content_as_string_or_parts_with_data_uri_and_file_images() {
        let cfg = ServeConfig { allowed_dirs: vec!["/tmp".into()], ..Default::default() };
        let body = br#"{"messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,aGk="}},
            {"type":"image_url","image_url":{"url":"file:///tmp/a.png"}},{"type":"text","text":"What?"}]}],
            "stop":"END","max_tokens":7,"seed":3}"#;
        let (_, r) = parse_body(body, &cfg).unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].parts[0], ContentPart::Image(ImageSource::Bytes(Arc::from(&b"hi"[..]))));
        assert_eq!(r.messages[1].parts[1], ContentPart::Image(ImageSource::Path("/tmp/a.png".into())));
        assert_eq!((r.options.max_tokens, r.options.seed, r.options.stop.clone()), (7, 3, vec!["END".to_string()]));
    }

    #[test]
    fn video_url_parts_are_data_uris_or_allowed_local_files() {
        let body = br#"{"messages":[{"role":"user","content":[
            {"type":"video_url","video_url":{"url":"data:video/mp4;base64,aGk="}},
            {"type":"video_url","video_url":{"url":"file:///tmp/a.mp4"}},{"type":"text","text":"What happens?"}]}]}"#;
        let cfg = ServeConfig { allowed_dirs: vec!["/tmp".into()], ..Default::default() };
        let (_, r) = parse_body(body, &cfg).unwrap();
        assert_eq!(r.messages[0].parts[0], ContentPart::Video(VideoSource::Bytes(Arc::from(&b"hi"[..]))));
        assert_eq!(r.messages[0].parts[1], ContentPart::Video(VideoSource::Path("/tmp/a.mp4".into())));
        let e = parse_body(body, &ServeConfig::default()).unwrap_err();
        assert!(e.contains("messages[0].content[1]: local video files are not allowed"), "{e}");
        let remote = br#"{"messages":[{"role":"user","content":[{"type":"video_url","video_url":{"url":"https://x/a.mp4"}}]}]}"#;
        assert!(parse_body(remote, &cfg).unwrap_err().contains("remote video URLs are not fetched"));
        let no_url = br#"{"messages":[{"role":"user","content":[{"type":"video_url"}]}]}"#;
        assert!(parse_body(no_url, &cfg).unwrap_err().contains("needs `video_url: {url: ...}`"));
    }

    #[test]
    fn generation_config_fills_what_the_request_leaves_out() {
        let body = |extra: &str| format!(r#"{{"messages":[{{"role":"user","content":"x"}}]{extra}}}"#);
        let opts = |cfg: &ServeConfig, extra: &str| parse_body(body(extra).as_bytes(), cfg).unwrap().1.options;
        // Without a generation_config.json: greedy, no penalty.
        let plain = opts(&ServeConfig::default(), "");
        assert_eq!((plain.temperature, plain.top_p, plain.top_k, plain.repetition_penalty), (0.0, 1.0, 0, 1.0));
        let defaults = GenerationDefaults { do_sample: true, temperature: Some(0.7), top_p: Some(0.8), top_k: Some(20), repetition_penalty: Some(1.05) };
        let cfg = ServeConfig { sampling_defaults: defaults.clone(), ..Default::default() };
        let o = opts(&cfg, "");
        assert_eq!((o.temperature, o.top_p, o.top_k, o.repetition_penalty), (0.7, 0.8, 20, 1.05));
        // What the request gives wins, parameter by parameter; the rest comes from the folder.
        let o = opts(&cfg, r#","temperature":0.2,"repetition_penalty":1.3"#);
        assert_eq!((o.temperature, o.top_p, o.top_k, o.repetition_penalty), (0.2, 0.8, 20, 1.3));
        // The same resolution as the CLI's `ask` (GenerationDefaults::options).
        let choice = SamplingChoice { temperature: Some(0.2), repetition_penalty: Some(1.3), max_tokens: o.max_tokens, ..Default::default() };
        assert_eq!(o, defaults.options(&choice));
    }

    #[test]
    fn bad_bodies_are_explained() {
        let cfg = ServeConfig::default();
        for (body, needle) in [
            (&br#"{"messages":[{"role":"function","content":"x"}]}"#[..], "unsupported role"),
            (br#"{"messages":[{"role":"user","content":[{"type":"audio"}]}]}"#, "unsupported part type"),
            (br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#, "remote"),
            (br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"/etc/a.png"}}]}]}"#, "not allowed"),
            (br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,@@"}}]}]}"#, "base64"),
            (br#"{"messages":[{"role":"user","content":"x"}],"stop":3}"#, "stop must be"),
            (br#"{"messages":"#, "not a valid chat request"),
            (br#"[1]"#, "JSON object"),
        ] {
            let err = parse_body(body, &cfg).unwrap_err();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn unsupported_and_unknown_fields_are_refused_by_name_and_defaults_accepted() {
        let cfg = ServeConfig::default();
        let with = |extra: &str| format!(r#"{{"messages":[{{"role":"user","content":"x"}}],{extra}}}"#);
        for (extra, name) in [
            (r#""logprobs":true"#, "logprobs"),
            (r#""top_logprobs":3"#, "top_logprobs"),
            (r#""logit_bias":{"42":5}"#, "logit_bias"),
            (r#""presence_penalty":0.5"#, "presence_penalty"),
            (r#""frequency_penalty":-1"#, "frequency_penalty"),
            (r#""response_format":{"type":"json_object"}"#, "response_format"),
            (r#""tools":[{"type":"retrieval"}]"#, "tools[0]"),
            (r#""tools":{"type":"function"}"#, "tools"),
            (r#""tool_choice":"required""#, "tool_choice"),
            (r#""tool_choice":{"type":"function","function":{"name":"f"}}"#, "tool_choice"),
            (r#""parallel_tool_calls":"yes""#, "parallel_tool_calls"),
            (r#""functions":[{"name":"f"}]"#, "functions"),
            (r#""function_call":"auto""#, "function_call"),
            (r#""n":2"#, "n"),
            (r#""best_of":3"#, "best_of"),
            (r#""audio":{"voice":"alloy"}"#, "audio"),
            (r#""modalities":["text","audio"]"#, "modalities"),
            (r#""prediction":{"type":"content","content":"x"}"#, "prediction"),
            (r#""frobnicate":1"#, "frobnicate"),
        ] {
            let err = parse_body(with(extra).as_bytes(), &cfg).unwrap_err();
            assert!(err.contains(&format!("`{name}`")), "{extra}: {err}");
        }
        let defaults = with(
            r#""logprobs":false,"top_logprobs":null,"logit_bias":{},"presence_penalty":0,"frequency_penalty":0.0,
               "response_format":{"type":"text"},"tools":[],"tool_choice":"none","n":1,"best_of":1,
               "modalities":["text"],"user":"u1","metadata":{"a":"b"},"store":false,"service_tier":"auto",
               "parallel_tool_calls":false,"stream_options":{"include_usage":true}"#,
        );
        parse_body(defaults.as_bytes(), &cfg).unwrap();
        let named = br#"{"messages":[{"role":"user","content":"x","name":"ann"}],"repetition_penalty":1.2}"#;
        assert_eq!(parse_body(named, &cfg).unwrap().1.options.repetition_penalty, 1.2);
        for bad in ["0", "-1", "\"high\""] {
            let err = parse_body(with(&format!(r#""repetition_penalty":{bad}"#)).as_bytes(), &cfg).unwrap_err();
            assert!(err.contains("`repetition_penalty` must be a number > 0"), "{err}");
        }
        for (message, field) in [
            (r#"{"role":"user","content":"x","tool_call_id":"1"}"#, "tool_call_id"),
            (r#"{"role":"user","content":"x","tool_calls":[]}"#, "tool_calls"),
            (r#"{"role":"assistant","content":"x","refusal":"no"}"#, "refusal"),
            (r#"{"role":"assistant","content":"x","function_call":{"name":"f"}}"#, "function_call"),
            (r#"{"role":"assistant","content":"x","annotations":[{}]}"#, "annotations"),
            (r#"{"role":"user","content":"x","weight":1}"#, "weight"),
        ] {
            let err = parse_body(format!(r#"{{"messages":[{message}]}}"#).as_bytes(), &cfg).unwrap_err();
            assert!(err.contains(&format!("`{field}`")), "{message}: {err}");
        }
    }

    const TOOL: &str = r#"{"type":"function","function":{"name":"click","parameters":{"type":"object"}}}"#;

    #[test]
    fn tools_are_passed_on_unless_tool_choice_is_none() {
        let cfg = ServeConfig::default();
        let body = |extra: &str| {
            format!(
                r#"{{"messages":[{{"role":"user","content":"x"}}],"tools":[{TOOL}],"parallel_tool_calls":true{extra}}}"#
            )
        };
        let tool: Value = serde_json::from_str(TOOL).unwrap();
        for extra in ["", r#","tool_choice":"auto""#, r#","tool_choice":null"#] {
            assert_eq!(parse_body(body(extra).as_bytes(), &cfg).unwrap().1.tools, vec![tool.clone()], "{extra}");
        }
        assert!(parse_body(body(r#","tool_choice":"none""#).as_bytes(), &cfg).unwrap().1.tools.is_empty());
        let err = parse_body(body(r#","tool_choice":"required""#).as_bytes(), &cfg).unwrap_err();
        assert!(err.contains("`tool_choice`") && err.contains("\"required\" is not supported"), "{err}");
    }

    #[test]
    fn tool_results_and_earlier_calls_become_the_templates_turns() {
        let cfg = ServeConfig::default();
        let body = br#"{"messages":[{"role":"user","content":"Click OK."},
            {"role":"assistant","content":null,"refusal":null,"tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"click","arguments":"{\"x\": 5}"}},
                {"id":"call_2","type":"function","function":{"name":"wait","arguments":{"s":1,"why":["a"]}}}]},
            {"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"clicked"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,aGk="}}]},
            {"role":"tool","tool_call_id":"call_2","content":"waited"},
            {"role":"assistant","content":"Next.","tool_calls":[{"type":"function","function":{"name":"done","arguments":"{}"}}]}]}"#;
        let (_, r) = parse_body(body, &cfg).unwrap();
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Tool, Role::Assistant]);
        let calls = "<tool_call>\n{\"name\": \"click\", \"arguments\": {\"x\": 5}}\n</tool_call>\n\
                     <tool_call>\n{\"name\": \"wait\", \"arguments\": {\"s\": 1, \"why\": [\"a\"]}}\n</tool_call>";
        assert_eq!(r.messages[1].parts, [ContentPart::Text(calls.into())]);
        assert_eq!(r.messages[2].parts[1], ContentPart::Image(ImageSource::Bytes(Arc::from(&b"hi"[..]))));
        let done = "\n<tool_call>\n{\"name\": \"done\", \"arguments\": {}}\n</tool_call>";
        assert_eq!(r.messages[4].parts, [ContentPart::Text("Next.".into()), ContentPart::Text(done.into())]);
        let bad = br#"{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{x"}}]}]}"#;
        let err = parse_body(bad, &cfg).unwrap_err();
        assert!(err.contains("messages[0]: `tool_calls[0]`: `function.arguments` is not valid JSON"), "{err}");
    }
}
