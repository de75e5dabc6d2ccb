//! The access guards and cross-site rules: `METHOD PEER` then
//! `Name: value` lines, as arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pprof_core::fuzzing::guards(&String::from_utf8_lossy(data));
});
