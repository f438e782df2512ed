//! The GeoTIFF band reader on arbitrary bytes: decode (u16 and any-u16) must return
//! Ok or a typed error, never panic, hang or allocate beyond the header caps.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.tif");
    let _ = s2edge::granule::tiff::decode_u16(data, p);
    let _ = s2edge::granule::tiff::decode_any_u16(data, p);
});
