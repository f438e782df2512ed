//! The configuration (`s2edge.toml`): deserialisation with deny_unknown_fields, then
//! validation and the derived selections, on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = toml::from_str::<s2edge::config::Settings>(text) {
            if s.validate().is_ok() {
                let _ = s.model_selection();
                let _ = s.runtime.provider_options();
            }
        }
    }
});
