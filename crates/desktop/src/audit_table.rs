//! The audit log as a table a person reads: one [`AuditRow`] per record (time, step, action,
//! target, decision), read from the JSON lines the agent writes (`screenpilot_agent::audit`).
//! A task's rows are the lines it appended: [`line_count`] before it starts, [`read_rows`]
//! from there when it ends. Lines that are not records (a torn write) become a row saying so.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{DesktopError, Result};

/// One audit record, readable.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRow {
    /// `HH:MM:SS` (UTC) of the record.
    pub time: String,
    /// The whole RFC 3339 time.
    pub timestamp: String,
    /// The model turn within its task.
    pub step: u32,
    /// What the action does (`left click`, `type "hello"`, `finish (success)`).
    pub action: String,
    /// Screen coordinates it touches (`(812, 455)`), or empty.
    pub target: String,
    /// What was decided (`executed`, `rejected by you`, `refused: actions are off`).
    pub decision: String,
}

/// The number of lines of the log at `path` (0 when it does not exist yet).
pub fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// The rows of the records from line `from` (0-based) on; the last `limit` of them at most.
pub fn read_rows(path: &Path, from: usize, limit: usize) -> Result<Vec<AuditRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(DesktopError::io(path, e)),
    };
    let lines: Vec<&str> = text.lines().skip(from).filter(|l| !l.trim().is_empty()).collect();
    Ok(lines[lines.len().saturating_sub(limit)..].iter().map(|l| row(l)).collect())
}

/// One line as a row.
pub fn row(line: &str) -> AuditRow {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return AuditRow {
            time: String::new(),
            timestamp: String::new(),
            step: 0,
            action: "(unreadable line)".into(),
            target: String::new(),
            decision: String::new(),
        };
    };
    let timestamp = v["time"].as_str().unwrap_or_default().to_string();
    let time = timestamp.get(11..19).unwrap_or(&timestamp).to_string();
    let target = v["screen_coordinates"]
        .as_array()
        .map(|ps| ps.iter().map(|p| format!("({}, {})", p["x"], p["y"])).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    AuditRow {
        time,
        timestamp,
        step: v["turn"].as_u64().and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
        action: action(&v),
        target,
        decision: decision(v["decision"].as_str().unwrap_or(""), v["detail"].as_str()),
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    format!("{}…", text.chars().take(max).collect::<String>())
}

/// The action of a record: its screen action when it got that far, else the model's action.
fn action(v: &Value) -> String {
    let s = &v["screen_action"];
    let count_word = |n: u64| match n {
        1 => "click".to_string(),
        2 => "double-click".to_string(),
        3 => "triple-click".to_string(),
        n => format!("click ×{n}"),
    };
    match s["kind"].as_str() {
        Some("click") => format!("{} {}", s["button"].as_str().unwrap_or("left"), count_word(s["count"].as_u64().unwrap_or(1))),
        Some("key") => {
            let keys: Vec<&str> = s["keys"].as_array().map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            format!("press {}", keys.join("+"))
        }
        Some("type") => format!("type {:?}", clip(s["text"].as_str().unwrap_or(""), 60)),
        Some("move_to") => "move the pointer".into(),
        Some("drag") => "drag".into(),
        Some("scroll") => format!("scroll {} {}", s["axis"].as_str().unwrap_or(""), s["notches"]),
        Some("wait") => "wait".into(),
        Some(other) => other.replace('_', " "),
        None => model_action(&v["action"]),
    }
}

fn model_action(a: &Value) -> String {
    match a["action"].as_str() {
        Some("terminate") => format!("finish ({})", a["status"].as_str().unwrap_or("?")),
        Some("answer") => format!("answer {:?}", clip(a["text"].as_str().unwrap_or(""), 60)),
        Some(other) => other.replace('_', " "),
        None => "(no action)".into(),
    }
}

fn decision(d: &str, detail: Option<&str>) -> String {
    let with = |s: &str| detail.map_or_else(|| s.to_string(), |x| format!("{s}: {}", clip(x, 120)));
    match d {
        "approved" => "approved, about to run".into(),
        "executed" => "executed".into(),
        "rejected_by_user" => "rejected by you".into(),
        "refused_disabled" => "refused: actions are off".into(),
        "refused_invalid" => with("refused"),
        "refused_step_limit" => "refused: step limit reached".into(),
        "stopped" => "stopped".into(),
        "failed" => with("failed"),
        "finished" => "finished".into(),
        "no_action" => "no action in the answer".into(),
        other => other.replace('_', " "),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CLICK: &str = r#"{"time":"2026-12-07T02:40:44.044Z","turn":2,"screenshot_sha256":"99","model_output":"<tool_call>…","action":{"action":"click","button":"left","count":1,"coordinate":{"x":500.0,"y":500.0}},"screen_action":{"kind":"click","button":"left","count":1,"at":{"x":1100,"y":50}},"screen_coordinates":[{"x":1100,"y":50}],"decision":"rejected_by_user","detail":null,"prev_sha256":"00"}"#;
    const DONE: &str = r#"{"time":"2026-12-07T02:40:45.000Z","turn":3,"screenshot_sha256":"99","model_output":"x","action":{"action":"terminate","status":"success"},"screen_action":null,"screen_coordinates":[],"decision":"finished","detail":null,"prev_sha256":"01"}"#;
    const TYPE: &str = r#"{"time":"2026-12-07T02:40:46.000Z","turn":4,"screenshot_sha256":"99","model_output":"x","action":{"action":"type","text":"hi"},"screen_action":{"kind":"type","text":"hi\n"},"screen_coordinates":[],"decision":"failed","detail":"no display","prev_sha256":"02"}"#;

    #[test]
    fn records_become_rows_a_person_reads() {
        let r = row(CLICK);
        assert_eq!((r.time.as_str(), r.step, r.action.as_str(), r.target.as_str(), r.decision.as_str()), ("02:40:44", 2, "left click", "(1100, 50)", "rejected by you"));
        let r = row(DONE);
        assert_eq!((r.action.as_str(), r.target.as_str(), r.decision.as_str()), ("finish (success)", "", "finished"));
        let r = row(TYPE);
        assert_eq!((r.action.as_str(), r.decision.as_str()), ("type \"hi\\n\"", "failed: no display"));
        assert_eq!(row("{torn").action, "(unreadable line)");
    }

    #[test]
    fn a_tasks_rows_are_the_lines_after_its_start() {
        let path = std::env::temp_dir().join(format!("sp-audit-table-{}.jsonl", std::process::id()));
        std::fs::write(&path, format!("{CLICK}\n")).unwrap();
        let start = line_count(&path);
        std::fs::write(&path, format!("{CLICK}\n{DONE}\n{TYPE}\n")).unwrap();
        let rows = read_rows(&path, start, 100).unwrap();
        assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(read_rows(&path, 0, 1).unwrap()[0].step, 4, "the last `limit` rows");
        assert!(read_rows(&path.with_extension("missing"), 0, 10).unwrap().is_empty());
        let _ = std::fs::remove_file(&path);
    }
}
