//! The audit log as a table a person reads: one [`AuditRow`] per record (time, step, action,
//! target, decision), read from the JSON lines the agent writes (`screenpilot_agent::audit`).
//! A task's rows are the lines it appended: [`line_count`] before it starts, [`read_rows`]
//! from there when it ends. Lines that are not records (a torn write) become a row saying so.
//!
//! [`prune`] keeps the log to an age limit without breaking its hash chain: it removes only
//! a leading run of old records, so every kept line still carries the hash of the line before
//! it, and the first kept line carries the hash of the last removed one. The agent's
//! `audit_verify::verify` starts from the genesis hash, so on a pruned log it reports line 1
//! ("lines before it were removed") and checks nothing after it; the rest of the chain is intact
//! for a verifier that starts from line 1's `prev_sha256`.

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

const DAY_MS: u64 = 86_400_000;

/// Removes the records older than `max_age_days` (0: keeps everything) from the start of the
/// log at `path` and returns how many went. Only a leading run goes: it ends at the first line
/// that is recent, unreadable or has no time, so nothing that cannot be read is lost and the
/// kept lines stay byte for byte (their hashes hold). The file is rewritten atomically; an
/// [`screenpilot_agent::audit::AuditLog`] holding the old file open then refuses to write (it
/// checks its path), so prune between tasks, not during one.
pub fn prune(path: &Path, max_age_days: u32, now_ms: u64) -> Result<usize> {
    if max_age_days == 0 {
        return Ok(0);
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(DesktopError::io(path, e)),
    };
    let cutoff = now_ms.saturating_sub(u64::from(max_age_days) * DAY_MS);
    let (mut offset, mut removed) = (0, 0);
    // A last line without its newline (a torn write) is never removed.
    while let Some(len) = bytes[offset..].iter().position(|&b| b == b'\n') {
        let line = &bytes[offset..offset + len];
        let time = serde_json::from_slice::<Value>(line).ok().and_then(|v| v["time"].as_str().and_then(parse_time_ms));
        if time.is_none_or(|t| t >= cutoff) {
            break;
        }
        offset += len + 1;
        removed += 1;
    }
    if removed > 0 {
        crate::threads::write_atomic(path, &bytes[offset..])?;
    }
    Ok(removed)
}

/// Milliseconds since the epoch of a UTC RFC 3339 time as the agent writes it
/// (`2026-12-07T02:40:44.044Z`; fractions optional, `Z` or `+00:00`).
pub fn parse_time_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let millis: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from the civil date (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(days * DAY_MS + (hh * 3600 + mm * 60 + ss) * 1000 + millis)
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

    #[test]
    fn times_parse_to_epoch_milliseconds() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time_ms("2026-12-07T15:13:00.123Z"), Some(1_796_656_380_123));
        assert_eq!(parse_time_ms("2000-02-29T12:00:00.5+00:00"), Some(951_825_600_500));
        for bad in ["", "2026-12-07", "2026-13-01T00:00:00Z", "2026-12-07T25:00:00Z", "2026-12-07T10:00:00", "x-1-1T0:0:0Z", "2026-12-07T10:00:00.1aZ"] {
            assert_eq!(parse_time_ms(bad), None, "{bad:?}");
        }
        // Agrees with the agent's formatter.
        for secs in [0u64, 951_825_600, 1_796_656_380, 4_102_444_800] {
            let t = screenpilot_agent::audit::format_rfc3339(secs, 7);
            assert_eq!(parse_time_ms(&t), Some(secs * 1000 + 7), "{t}");
        }
    }

    /// A hash-chained log of records at the given times (ms), as the agent writes it.
    fn chained(times: &[u64]) -> Vec<String> {
        let mut prev = screenpilot_agent::audit::GENESIS.to_string();
        times
            .iter()
            .enumerate()
            .map(|(i, &ms)| {
                let time = screenpilot_agent::audit::format_rfc3339(ms / 1000, (ms % 1000) as u32);
                let line = format!(r#"{{"time":"{time}","turn":{i},"screenshot_sha256":"99","model_output":"x","action":null,"screen_action":null,"screen_coordinates":[],"decision":"finished","detail":null,"prev_sha256":"{prev}"}}"#);
                prev = screenpilot_agent::audit::sha256_hex(line.as_bytes());
                line
            })
            .collect()
    }

    #[test]
    fn prune_removes_a_leading_run_of_old_records_and_keeps_the_chain() {
        use screenpilot_agent::audit_verify::{verify_file, BreakReason};
        let day = DAY_MS;
        let now = 1_000 * day;
        let lines = chained(&[now - 100 * day, now - 95 * day, now - 91 * day, now - 10 * day, now - 200 * day, now - day]);
        let path = std::env::temp_dir().join(format!("sp-audit-prune-{}.jsonl", std::process::id()));
        std::fs::write(&path, format!("{}\n", lines.join("\n"))).unwrap();
        assert!(verify_file(&path).unwrap().is_ok());
        assert_eq!(prune(&path, 0, now).unwrap(), 0, "0 days keeps all");
        assert_eq!(prune(&path, 365, now).unwrap(), 0);
        // The three leading records older than 90 days go; the old one after a recent one stays.
        assert_eq!(prune(&path, 90, now).unwrap(), 3);
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, format!("{}\n", lines[3..].join("\n")), "kept lines are byte for byte");
        assert_eq!(prune(&path, 90, now).unwrap(), 0, "nothing more at the front");
        // The agent's verifier stops at line 1, which carries the hash of the last removed line.
        let report = verify_file(&path).unwrap();
        let brk = report.first_break.unwrap();
        assert_eq!(brk.line, 1);
        let expected_found = screenpilot_agent::audit::sha256_hex(lines[2].as_bytes());
        assert!(matches!(brk.reason, BreakReason::HashMismatch { found, .. } if found == expected_found));
        // From line 1's hash on, the chain holds.
        let kept: Vec<&str> = kept.lines().collect();
        for w in kept.windows(2) {
            let v: Value = serde_json::from_str(w[1]).unwrap();
            assert_eq!(v["prev_sha256"].as_str().unwrap(), screenpilot_agent::audit::sha256_hex(w[0].as_bytes()));
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn prune_never_loses_what_it_cannot_read() {
        let day = DAY_MS;
        let now = 1_000 * day;
        let lines = chained(&[now - 100 * day, now - 100 * day, now - 100 * day]);
        let path = std::env::temp_dir().join(format!("sp-audit-prune-torn-{}.jsonl", std::process::id()));
        // An old record, an unreadable line, an old record, and a torn last line.
        let text = format!("{}\n{{torn\n{}\n{}", lines[0], lines[1], &lines[2][..40]);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(prune(&path, 30, now).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text[lines[0].len() + 1..]);
        // Only old records, the last one without its newline: that one stays.
        std::fs::write(&path, format!("{}\n{}", lines[0], lines[1])).unwrap();
        assert_eq!(prune(&path, 30, now).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), lines[1]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(prune(&path, 30, now).unwrap(), 0, "a missing log has nothing to prune");
    }
}
