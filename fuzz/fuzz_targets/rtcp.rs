#![no_main]
//! Body in callout::fuzzing::rtcp (shared with tests/fuzz_corpus.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callout::fuzzing::rtcp(data);
});
