//! Builds the TypeScript UI (ui/ → ui/dist, with npm and Vite) before tauri-build embeds it.

use std::path::Path;
use std::process::Command;

fn npm(args: &[&str], dir: &Path) {
    // On Windows npm is a batch file, which Command finds only by its full name.
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let status = Command::new(npm).args(args).current_dir(dir).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("`npm {}` in {} failed with {s}", args.join(" "), dir.display()),
        Err(e) => panic!("cannot run npm (install Node.js 18+): {e}"),
    }
}

fn main() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui");
    for p in ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"] {
        println!("cargo:rerun-if-changed={}", ui.join(p).display());
    }
    // `npm ci` when node_modules is missing or was installed from another package-lock.json
    // (a copy of the lock it was installed from is kept next to it).
    let lock = std::fs::read(ui.join("package-lock.json")).unwrap_or_default();
    let stamp = ui.join("node_modules/.screenpilot-package-lock.json");
    if std::fs::read(&stamp).ok().as_deref() != Some(lock.as_slice()) {
        npm(&["ci", "--no-audit", "--no-fund"], &ui);
        if let Err(e) = std::fs::write(&stamp, &lock) {
            println!("cargo:warning=cannot write {}: {e}", stamp.display());
        }
    }
    npm(&["run", "build"], &ui);
    tauri_build::build();
}
