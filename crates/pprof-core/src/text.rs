//! Go's legacy text formats (`debug=1`).

use std::fmt::Write;

use crate::encode::{Symbolized, symbolize};
use crate::profile::StackProfile;

/// One `#\t0xPC\tfunction\tfile:line` line per frame, inlined frames
/// included, then a blank line (Go's `printStackRecord`).
fn write_frames(out: &mut String, stack: &Symbolized) {
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
fn write_addresses(out: &mut String, stack: &Symbolized) {
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

/// `text` cut to at most `max` bytes at the end of its last whole line, with
/// one more line saying it was cut; unchanged when it fits. Every text
/// producer's answer goes through this (the handler applies it to `debug>0`).
pub(crate) fn cap(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    // `\n` is ASCII, so the byte after it is always a char boundary.
    let keep = text.as_bytes()[..max]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    text.truncate(keep);
    let _ = writeln!(
        text,
        "# truncated: this text is {total} bytes, over the server's limit of {max} \
         (pprof_core::Config::max_text_bytes); ask for debug=0 for the whole profile"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(cap("a\nb\n".to_owned(), 4), "a\nb\n");
    }

    #[test]
    fn long_text_is_cut_at_a_line_and_says_so() {
        let out = cap("one\ntwo\nthree\n".to_owned(), 10);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("one"));
        assert_eq!(lines.next(), Some("two"));
        let note = lines.next().unwrap_or_default();
        assert!(
            note.starts_with("# truncated: this text is 14 bytes"),
            "{note}"
        );
        assert_eq!(lines.next(), None);
        // Multi-byte characters never split, even with no newline in reach.
        assert!(cap("ééééé".to_owned(), 3).starts_with("# truncated"));
    }
}
