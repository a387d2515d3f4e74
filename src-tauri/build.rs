//! Builds the TypeScript UI (ui/ → ui/dist, with npm and Vite) before tauri-build embeds it.

use std::path::Path;
use std::process::Command;

fn npm(args: &[&str], dir: &Path) {
    let status = Command::new("npm").args(args).current_dir(dir).status();
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
    if !ui.join("node_modules").is_dir() {
        npm(&["ci", "--no-audit", "--no-fund"], &ui);
    }
    npm(&["run", "build"], &ui);
    tauri_build::build();
}
