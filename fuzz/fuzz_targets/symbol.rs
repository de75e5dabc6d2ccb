//! The `/symbol` body: tokens split on `+`, each an address in Go's syntax.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pprof_core::fuzzing::symbol(&String::from_utf8_lossy(data));
});
