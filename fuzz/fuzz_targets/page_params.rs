//! A page's path and parameters: `PAGE\nQUERY\nFORM` as arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let page = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let form = parts.next().unwrap_or_default();
    pprof_core::fuzzing::page_params(page, query, form);
});
