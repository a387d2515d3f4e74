//! Test helper: a small tmpfs mounted on a fresh folder (root only: the tests that use it fail
//! with a message saying so, they do not skip), and filling a file system to the last byte.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh folder, unmounted (and the folder removed) on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=16k`, `ro,size=16k`) on a folder named after
    /// the test binary's `prefix`, this process and `name`.
    pub fn mount(prefix: &str, name: &str, options: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sp-{prefix}-{}-{name}", std::process::id()));
        let _ = Command::new("umount").arg(&dir).output();
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(&dir).output();
        let ok = matches!(&out, Ok(o) if o.status.success());
        let why = match &out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        if !ok {
            let _ = std::fs::remove_dir(&dir);
        }
        assert!(ok, "this test needs root: `mount -t tmpfs -o {options} tmpfs {}` failed ({why}); run it as root (CI does)", dir.display());
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes zeros into `dir` until the file system is full.
pub fn fill(dir: &Path) {
    let mut f = File::create(dir.join("filler")).unwrap();
    let block = [0u8; 4096];
    while matches!(f.write(&block), Ok(n) if n > 0) {}
    let _ = f.sync_all();
}
