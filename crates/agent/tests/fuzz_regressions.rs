//! Fuzzing's regression tests (fuzz/, docs/FUZZING.md): the committed corpus of the
//! `model_output` target, and any crash it found, run through the target's own code
//! (fuzz/src/model_output.rs) in `cargo test`, without cargo-fuzz or nightly flags.

#[path = "../../../fuzz/src/model_output.rs"]
mod model_output;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn model_output_corpus_replays_without_a_panic() {
    let n = replay::replay("model_output", model_output::run);
    assert!(n >= 10, "only {n} inputs: is fuzz/corpus/model_output there?");
}
