//! A minimal W3C WebDriver client (the few endpoints the e2e test needs), over ureq.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session.
pub struct Session {
    base: String,
    id: String,
}

fn call(method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
    let req = ureq::request(method, url).timeout(Duration::from_secs(600));
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let v: Value = match resp {
        Ok(r) => r.into_json().map_err(|e| e.to_string())?,
        Err(ureq::Error::Status(code, r)) => return Err(format!("{method} {url}: HTTP {code}: {}", r.into_string().unwrap_or_default())),
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    Ok(v.get("value").cloned().unwrap_or(Value::Null))
}

impl Session {
    /// Starts the app through tauri-driver at `base`.
    pub fn new(base: &str, application: &str) -> Result<Self, String> {
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "wry", "tauri:options": {"application": application}}}});
        let v = call("POST", &format!("{base}/session"), Some(caps))?;
        let id = v["sessionId"].as_str().ok_or(format!("no session id in {v}"))?.to_string();
        Ok(Self { base: base.to_string(), id })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{}", self.base, self.id, path)
    }

    /// The element matching a CSS selector.
    pub fn find(&self, css: &str) -> Result<String, String> {
        let v = call("POST", &self.url("/element"), Some(json!({"using": "css selector", "value": css})))?;
        v[ELEMENT].as_str().map(str::to_string).ok_or(format!("{css}: {v}"))
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) -> Result<(), String> {
        let id = self.find(css)?;
        call("POST", &self.url(&format!("/element/{id}/click")), Some(json!({}))).map(drop)
    }

    /// Types into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let id = self.find(css)?;
        call("POST", &self.url(&format!("/element/{id}/clear")), Some(json!({})))?;
        call("POST", &self.url(&format!("/element/{id}/value")), Some(json!({"text": text}))).map(drop)
    }

    /// Runs synchronous JS with `args`.
    pub fn exec(&self, script: &str, args: Value) -> Result<Value, String> {
        call("POST", &self.url("/execute/sync"), Some(json!({"script": script, "args": args})))
    }

    /// Runs async JS: the script calls its last argument with the result.
    pub fn exec_async(&self, script: &str, args: Value) -> Result<Value, String> {
        call("POST", &self.url("/execute/async"), Some(json!({"script": script, "args": args})))
    }

    /// Presses and releases one key (a WebDriver key code like "\u{E007}") through the actions API.
    pub fn press(&self, key: &str) -> Result<(), String> {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        call("POST", &self.url("/actions"), Some(actions)).map(drop)
    }

    /// Drags the mouse across the element matching `css`, between two offsets from its centre.
    pub fn drag(&self, css: &str, from: (i64, i64), to: (i64, i64)) -> Result<(), String> {
        let id = self.find(css)?;
        let origin = json!({ ELEMENT: id });
        let actions = json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "origin": origin, "x": from.0, "y": from.1},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerMove", "origin": origin, "x": to.0, "y": to.1, "duration": 100},
            {"type": "pointerUp", "button": 0}]}]});
        call("POST", &self.url("/actions"), Some(actions)).map(drop)
    }

    /// Polls the JS expression `expr` until it is truthy, returning its value.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Result<Value, String> {
        let start = Instant::now();
        let script = format!("return ({expr});");
        loop {
            let v = self.exec(&script, json!([]))?;
            let truthy = !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0));
            if truthy {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                let state = self.exec("return document.getElementById('error').textContent + ' | view: ' + document.body.dataset.view", json!([]))?;
                return Err(format!("timed out waiting for `{expr}` (ui: {state})"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// PNG of the window.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let v = call("GET", &self.url("/screenshot"), None)?;
        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).map_err(|e| e.to_string())
    }

    /// Ends the session (closes the app).
    pub fn close(&self) -> Result<(), String> {
        call("DELETE", &self.url(""), None).map(drop)
    }
}
