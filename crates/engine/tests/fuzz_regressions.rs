//! Fuzzing's regression tests (fuzz/, docs/FUZZING.md): the committed corpus of the
//! `chat_request` target, and any crash it found, run through the target's own code
//! (fuzz/src/chat_request.rs) in `cargo test`, without cargo-fuzz or nightly flags.

#[path = "../../../fuzz/src/chat_request.rs"]
mod chat_request;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn chat_request_corpus_replays_without_a_panic() {
    let n = replay::replay("chat_request", chat_request::run);
    assert!(n >= 10, "only {n} inputs: is fuzz/corpus/chat_request there?");
}
