//! An uploaded file, from decoding to drawn pages (flame graph, top table,
//! diff): an optional first line of page parameters (`focus=…&…`, under
//! 256 bytes), then the file, gzipped or not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (query, file) = match data.iter().position(|b| *b == b'\n') {
        Some(i) if i < 256 && data[0] != 0x1f => {
            (String::from_utf8_lossy(&data[..i]), &data[i + 1..])
        }
        _ => (Default::default(), data),
    };
    pprof_core::fuzzing::page(&query, file);
});
