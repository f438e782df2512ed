//! The JPEG 2000 reader (header check, then OpenJPEG) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.jp2");
    if s2edge::granule::jp2::read_header(data, p).is_ok() {
        let _ = s2edge::granule::jp2::decode_u16(data, p);
        let _ = s2edge::granule::jp2::decode_components(data, p);
    }
});
