//! A zipped SAFE on arbitrary bytes: the archive checks (escaping names, one top-level
//! directory, capped entries), the manifest rule's view (`SafeFiles`) and the reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("s2edge-fuzz-{}.SAFE.zip", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else { return };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    let _ = s2edge::granule::safe::open_zip(&path);
    if let Ok(mut files) = s2edge::granule::safe::SafeFiles::open(&path) {
        if let Ok(Some(m)) = files.manifest() {
            for f in m.files.iter().take(16) {
                let _ = files.size(&f.href);
                let _ = files.read_into(&f.href, 1 << 20, &mut |_| {});
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
