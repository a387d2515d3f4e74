//! Fuzzing's regression tests (fuzz/, docs/FUZZING.md): the committed corpora of the
//! `safetensors_config` and `image_decode` targets, and any crash they found, run through the
//! targets' own code (fuzz/src/*.rs) in `cargo test`, without cargo-fuzz or nightly flags.

#[path = "../../../fuzz/src/image_decode.rs"]
mod image_decode;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;
#[path = "../../../fuzz/src/safetensors_config.rs"]
mod safetensors_config;

#[test]
fn safetensors_config_corpus_replays_without_a_panic() {
    let n = replay::replay("safetensors_config", safetensors_config::run);
    safetensors_config::remove_folder();
    assert!(n >= 10, "only {n} inputs: is fuzz/corpus/safetensors_config there?");
}

#[test]
fn image_decode_corpus_replays_without_a_panic() {
    let n = replay::replay("image_decode", image_decode::run);
    assert!(n >= 10, "only {n} inputs: is fuzz/corpus/image_decode there?");
}
