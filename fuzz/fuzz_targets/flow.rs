#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = callout::action::flow::load_str(text, std::path::Path::new("flows/fuzz.toml"));
    }
});
