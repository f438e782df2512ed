//! The SAFE metadata parsers (MTD_MSIL*.xml, MTD_TL.xml, manifest.safe) through the
//! hardened XML layer, on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        s2edge::granule::safe::fuzz_metadata(text);
    }
});
