//! libfuzzer-sys's panic hook aborts at the panic, before unwinding, so a panic that our code
//! catches on purpose still counts as a crash. `decode_image_limited` catches panics of the
//! codec crates (a bug of theirs on malformed data becomes an error for that image alone), so
//! the image_decode binary installs this hook over libfuzzer-sys's: a panic raised in a crate
//! from the cargo registry unwinds (to our `catch_unwind`; if none catches it, libfuzzer-sys's
//! wrapper aborts all the same), and a panic anywhere else aborts at once as before.

use std::sync::Once;

/// Installs the hook once (call it at the start of every input; it is cheap after the first).
pub fn let_registry_panics_unwind() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_registry = info.location().is_some_and(|l| is_registry_path(l.file()));
            if in_registry {
                eprintln!("fuzz: a dependency panicked (left to unwind to our catch_unwind): {info}");
            } else {
                abort_hook(info);
            }
        }));
    });
}

/// Whether a source path is a crate downloaded from a registry (not ours, not std).
pub fn is_registry_path(file: &str) -> bool {
    file.contains("/.cargo/registry/src/") || file.contains("/cargo/registry/src/")
}
