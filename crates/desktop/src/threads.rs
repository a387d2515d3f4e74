//! Conversations kept on this computer: every capture opens a thread (`<dir>/<id>/capture.png`
//! and `thread.json`: where the capture came from, its geometry and the questions and answers
//! in order), so threads survive restarts and a stored answer's boxes map to the screen again.
//! Threads are listed newest first, deleted one by one or all at once, and [`ThreadStore::enforce`]
//! keeps them under a total size and an age limit. Ids come from the UI and are checked
//! (`[A-Za-z0-9_-]{1,64}`) before any path is built from them; every write is a temporary file
//! renamed into place, so a crash leaves the old file or the new one, never half of one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use screenpilot_agent::{CaptureGeometry, Screenshot};

use crate::error::{DesktopError, Result};

/// The capture of a thread.
pub const CAPTURE_FILE: &str = "capture.png";
/// The record of a thread.
pub const THREAD_FILE: &str = "thread.json";
/// Most characters of a title.
pub const TITLE_CHARS: usize = 80;
const DAY_MS: u64 = 86_400_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One question and its answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    /// The user stopped the answer (the text is what came before).
    #[serde(default)]
    pub cancelled: bool,
    /// When the answer ended, ms since the epoch.
    pub at_ms: u64,
    /// The UI's timings object as sent with the answer (opaque JSON, may be null).
    #[serde(default)]
    pub timings: serde_json::Value,
}

/// A thread as the list shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThreadSummary {
    pub id: String,
    /// The first question, or "Capture of <source>" while there is none; at most [`TITLE_CHARS`].
    pub title: String,
    /// Where the capture came from: a monitor's name, "region", a window's title.
    pub source: String,
    pub created_ms: u64,
    /// The last answer (or the creation).
    pub updated_ms: u64,
    pub turns: usize,
    /// Bytes on disk (capture and record).
    pub bytes: u64,
}

/// A whole thread.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Thread {
    pub summary: ThreadSummary,
    pub geometry: CaptureGeometry,
    pub turns: Vec<Turn>,
}

impl Thread {
    /// The conversation as [`crate::session::Session`] keeps it (cancelled answers left out, as
    /// the session leaves them out), for [`crate::session::Session::restore`].
    pub fn exchanges(&self) -> Vec<crate::assistant::Exchange> {
        self.turns
            .iter()
            .filter(|t| !t.cancelled)
            .map(|t| crate::assistant::Exchange { question: t.question.clone(), answer: t.answer.clone() })
            .collect()
    }
}

/// What `thread.json` holds (the id is the folder's name, the size is measured).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    source: String,
    created_ms: u64,
    updated_ms: u64,
    geometry: CaptureGeometry,
    #[serde(default)]
    turns: Vec<Turn>,
}

/// The threads in one folder. Shared between threads of the app (its operations are serialised).
#[derive(Debug)]
pub struct ThreadStore {
    dir: PathBuf,
    counter: AtomicU64,
    lock: Arc<Mutex<()>>,
}

/// Checks an id from the UI: 1 to 64 of `A-Z a-z 0-9 _ -`, so it names a folder inside the store.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(DesktopError::InvalidArgument(format!("{id:?} is not a conversation id")))
    }
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| DesktopError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DesktopError::io(path, e)
    })
}

/// Bytes of the regular files under `dir` (symbolic links are not followed).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn title(record: &Record) -> String {
    let first = record.turns.first().map(|t| t.question.trim().lines().next().unwrap_or("").trim().to_string());
    let text = match first {
        Some(q) if !q.is_empty() => q,
        _ => format!("Capture of {}", record.source),
    };
    if text.chars().count() <= TITLE_CHARS {
        text
    } else {
        format!("{}…", text.chars().take(TITLE_CHARS - 1).collect::<String>())
    }
}

/// `20261207-151300-123`: the UTC time of `ms`, sortable as text.
fn stamp(ms: u64) -> String {
    let t = screenpilot_agent::audit::format_rfc3339(ms / 1000, (ms % 1000) as u32); // YYYY-MM-DDTHH:MM:SS.mmmZ
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}-{}", &digits[..8.min(digits.len())], digits.get(8..14).unwrap_or(""), digits.get(14..17).unwrap_or(""))
}

impl ThreadStore {
    /// The store in `dir`, creating the folder.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| DesktopError::io(dir, e))?;
        // Captures are private: only their owner may read them (Unix).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| DesktopError::io(dir, e))?;
        }
        Ok(Self { dir: dir.to_path_buf(), counter: AtomicU64::new(0), lock: Arc::default() })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn thread_dir(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.dir.join(id))
    }

    fn existing(&self, id: &str) -> Result<PathBuf> {
        let dir = self.thread_dir(id)?;
        if dir.join(THREAD_FILE).is_file() {
            Ok(dir)
        } else {
            Err(DesktopError::InvalidArgument(format!("no conversation {id:?}")))
        }
    }

    fn read_record(dir: &Path) -> Result<Record> {
        let path = dir.join(THREAD_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| DesktopError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| DesktopError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
    }

    fn write_record(dir: &Path, record: &Record) -> Result<()> {
        let path = dir.join(THREAD_FILE);
        let text = serde_json::to_vec_pretty(record).map_err(|e| DesktopError::io(&path, std::io::Error::other(e)))?;
        write_atomic(&path, &text)
    }

    fn summary(id: &str, dir: &Path, record: &Record) -> ThreadSummary {
        ThreadSummary {
            id: id.to_string(),
            title: title(record),
            source: record.source.clone(),
            created_ms: record.created_ms,
            updated_ms: record.updated_ms,
            turns: record.turns.len(),
            bytes: dir_bytes(dir),
        }
    }

    /// Opens a thread on `shot`: stores the capture as PNG and an empty conversation.
    pub fn create(&self, shot: &Screenshot, source: &str, now_ms: u64) -> Result<ThreadSummary> {
        let (w, h) = shot.image.dimensions();
        if (w, h) != (shot.geometry.image_width, shot.geometry.image_height) {
            return Err(DesktopError::InvalidArgument(format!(
                "the capture is {w}x{h} but its geometry says {}x{}",
                shot.geometry.image_width, shot.geometry.image_height
            )));
        }
        let png = crate::screen::png_bytes(&shot.image)?;
        let _g = self.guard();
        let (id, dir) = loop {
            let n = self.counter.fetch_add(1, Ordering::SeqCst) % 10_000;
            let id = format!("{}-{n:04}", stamp(now_ms));
            let dir = self.dir.join(&id);
            match std::fs::create_dir(&dir) {
                Ok(()) => break (id, dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(DesktopError::io(&dir, e)),
            }
        };
        let record = Record { source: source.to_string(), created_ms: now_ms, updated_ms: now_ms, geometry: shot.geometry.clone(), turns: Vec::new() };
        let written = write_atomic(&dir.join(CAPTURE_FILE), &png).and_then(|()| Self::write_record(&dir, &record));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(Self::summary(&id, &dir, &record))
    }

    /// Adds a question and its answer to the end of thread `id`.
    pub fn append(&self, id: &str, turn: Turn) -> Result<ThreadSummary> {
        let _g = self.guard();
        let dir = self.existing(id)?;
        let mut record = Self::read_record(&dir)?;
        record.updated_ms = record.updated_ms.max(turn.at_ms);
        record.turns.push(turn);
        Self::write_record(&dir, &record)?;
        Ok(Self::summary(id, &dir, &record))
    }

    /// Every readable thread, the most recently updated first (ties: the newer id first).
    /// Folders that are not threads, or whose record is missing or corrupt, are left out.
    pub fn list(&self) -> Vec<ThreadSummary> {
        let _g = self.guard();
        self.list_unlocked()
    }

    fn list_unlocked(&self) -> Vec<ThreadSummary> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<ThreadSummary> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let id = e.file_name().to_str()?.to_string();
                validate_id(&id).ok()?;
                let dir = e.path();
                let record = Self::read_record(&dir).ok()?;
                Some(Self::summary(&id, &dir, &record))
            })
            .collect();
        out.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then_with(|| b.id.cmp(&a.id)));
        out
    }

    /// Thread `id` with its turns.
    pub fn load(&self, id: &str) -> Result<Thread> {
        let _g = self.guard();
        let dir = self.existing(id)?;
        let record = Self::read_record(&dir)?;
        Ok(Thread { summary: Self::summary(id, &dir, &record), geometry: record.geometry.clone(), turns: record.turns })
    }

    /// The capture of thread `id` with its stored geometry (checked again, and against the image),
    /// and the PNG bytes it was decoded from (what the UI shows, read once).
    pub fn capture(&self, id: &str) -> Result<(Screenshot, Vec<u8>)> {
        let _g = self.guard();
        let dir = self.existing(id)?;
        let g = Self::read_record(&dir)?.geometry;
        let geometry = CaptureGeometry::region(g.monitor, g.region, g.image_width, g.image_height)?;
        let path = dir.join(CAPTURE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| DesktopError::io(&path, e))?;
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .map_err(|e| DesktopError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?
            .to_rgb8();
        if image.dimensions() != (geometry.image_width, geometry.image_height) {
            return Err(DesktopError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, "the image does not match the stored geometry")));
        }
        Ok((Screenshot { image: Arc::new(image), geometry }, bytes))
    }

    /// Deletes thread `id` (also one whose record is corrupt).
    pub fn delete(&self, id: &str) -> Result<()> {
        let _g = self.guard();
        let dir = self.thread_dir(id)?;
        if !dir.is_dir() {
            return Err(DesktopError::InvalidArgument(format!("no conversation {id:?}")));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| DesktopError::io(&dir, e))
    }

    /// Deletes every thread folder (also unreadable ones); returns how many.
    pub fn delete_all(&self) -> Result<usize> {
        let _g = self.guard();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| DesktopError::io(&self.dir, e))?;
        let mut n = 0;
        for e in entries.flatten() {
            let is_thread = e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name().to_str().is_some_and(|s| validate_id(s).is_ok());
            if is_thread {
                let path = e.path();
                std::fs::remove_dir_all(&path).map_err(|err| DesktopError::io(&path, err))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// [`Self::enforce`] with the limits of `settings` (`thread_cap_mib`, `thread_days`).
    pub fn enforce_limits(&self, settings: &crate::settings::Settings, now_ms: u64, keep: Option<&str>) -> Result<Vec<String>> {
        self.enforce(settings.thread_cap_mib.saturating_mul(1 << 20), settings.thread_days, now_ms, keep)
    }

    /// Deletes every thread not updated for `max_age_days` (0: no age limit), then the least
    /// recently updated ones until the threads take at most `cap_bytes`; never `keep` (the open
    /// thread). Returns the deleted ids, in the order they went.
    pub fn enforce(&self, cap_bytes: u64, max_age_days: u32, now_ms: u64, keep: Option<&str>) -> Result<Vec<String>> {
        let _g = self.guard();
        let mut threads = self.list_unlocked();
        threads.reverse(); // oldest first
        let mut total: u64 = threads.iter().map(|t| t.bytes).sum();
        let cutoff = (max_age_days > 0).then(|| now_ms.saturating_sub(u64::from(max_age_days) * DAY_MS));
        let mut deleted = Vec::new();
        for t in &threads {
            if keep == Some(t.id.as_str()) {
                continue;
            }
            let too_old = cutoff.is_some_and(|c| t.updated_ms < c);
            if too_old || total > cap_bytes {
                let dir = self.dir.join(&t.id);
                std::fs::remove_dir_all(&dir).map_err(|e| DesktopError::io(&dir, e))?;
                total -= t.bytes;
                deleted.push(t.id.clone());
            }
        }
        Ok(deleted)
    }

    /// Bytes the readable threads take (what [`Self::enforce`] caps).
    pub fn total_bytes(&self) -> u64 {
        self.list().iter().map(|t| t.bytes).sum()
    }
}

#[cfg(test)]
#[path = "threads_tests.rs"]
mod tests;
