//! The model manifest (`model.toml`) parser and validator on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = s2edge::model::manifest::ModelSpec::parse(text) {
            let _ = spec.validate();
            let _ = spec.channel_normalisation();
            let _ = spec.input_channels();
        }
    }
});
