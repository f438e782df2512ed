//! The STAC Item reader of GeoTIFF folders on arbitrary JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    s2edge::granule::folder::fuzz_stac_item(data);
});
