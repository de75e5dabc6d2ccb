//! The request parser: `METHOD TARGET\nFORM` as arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (line, form) = match text.split_once('\n') {
        Some((line, form)) => (line, Some(form)),
        None => (text.as_ref(), None),
    };
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    pprof_core::fuzzing::request(method.as_bytes(), path, query, form);
});
