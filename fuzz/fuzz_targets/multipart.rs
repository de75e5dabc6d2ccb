//! An upload's `multipart/form-data` body: the first line is the boundary,
//! the rest the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (boundary, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]), &data[i + 1..]),
        None => (Default::default(), data),
    };
    pprof_core::fuzzing::multipart(&boundary, body);
});
