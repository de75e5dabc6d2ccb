//! Go's legacy text formats (`debug=1`).

use std::fmt::Write;

use crate::encode::{Symbolized, symbolize};
use crate::profile::StackProfile;

/// One `#\t0xPC\tfunction\tfile:line` line per frame, inlined frames
/// included, then a blank line (Go's `printStackRecord`).
pub(crate) fn write_frames(out: &mut String, stack: &Symbolized) {
    for (pc, frames) in &stack.stack {
        if frames.is_empty() {
            let _ = writeln!(out, "#\t{pc:#x}");
        }
        // Go adds `+0xOFFSET` from the function's entry; the debug info we
        // read gives no entry address, so the offset is left out.
        for f in frames.iter() {
            let _ = writeln!(out, "#\t{pc:#x}\t{}\t{}:{}", f.name, f.file, f.line);
        }
    }
    out.push('\n');
}

/// The `@ 0x… 0x…` stack of a record: return addresses, as Go prints them.
pub(crate) fn write_addresses(out: &mut String, stack: &Symbolized) {
    out.push_str(" @");
    for (pc, _) in &stack.stack {
        let _ = write!(out, " {:#x}", pc + 1);
    }
    out.push('\n');
}

/// `heap profile: …` text for heap and allocs, largest live bytes first,
/// followed by the allocator's statistics.
pub(crate) fn heap(profile: &StackProfile, stats: &[(&str, u64)]) -> String {
    let symbolized = symbolize(profile);
    let mut records: Vec<_> = profile.samples.iter().zip(&symbolized).collect();
    records.sort_by_key(|(s, _)| std::cmp::Reverse(s.values[3]));
    let mut total = [0i64; 4];
    for (s, _) in &records {
        for (t, v) in total.iter_mut().zip(&s.values) {
            *t += v;
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "heap profile: {}: {} [{}: {}] @ heap/{}",
        total[2],
        total[3],
        total[0],
        total[1],
        2 * profile.period
    );
    for (s, stack) in records {
        let v = &s.values;
        let _ = write!(out, "{}: {} [{}: {}]", v[2], v[3], v[0], v[1]);
        write_addresses(&mut out, stack);
        write_frames(&mut out, stack);
    }
    out.push_str("\n# jemalloc stats\n");
    for (name, value) in stats {
        let _ = writeln!(out, "# {name} = {value}");
    }
    out
}
