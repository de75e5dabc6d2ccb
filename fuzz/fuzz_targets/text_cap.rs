//! The text-size cap (the bounded writer, and the cap of texts built whole):
//! the first two bytes are the limit, the rest the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((limit, text)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(u16::from_le_bytes(*limit)) % 512;
    pprof_core::fuzzing::text_cap(&String::from_utf8_lossy(text), limit);
});
