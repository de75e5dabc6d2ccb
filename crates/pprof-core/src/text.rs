//! Go's legacy text formats (`debug=1`).

use std::fmt::Write;

use crate::encode::{Symbolized, symbolize};
use crate::profile::{Label, LeafTrim, StackProfile};

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

/// `goroutine profile: total N` text (goroutine and threadcreate
/// `debug=1`): one record per distinct stack and labels, most frequent first.
/// Stacks are whole (no leaf trimming), as Go prints them.
pub(crate) fn counts(name: &str, profile: &StackProfile) -> String {
    let whole = StackProfile {
        leaf_trim: LeafTrim::None,
        ..profile.clone()
    };
    let profile = &whole;
    let symbolized = symbolize(profile);
    let mut records: Vec<_> = profile.samples.iter().zip(&symbolized).collect();
    records.sort_by_key(|(s, _)| std::cmp::Reverse(s.values[0]));
    let total: i64 = profile.samples.iter().map(|s| s.values[0]).sum();
    let mut out = String::new();
    let _ = writeln!(out, "{name} profile: total {total}");
    for (s, stack) in records {
        let _ = write!(out, "{}", s.values[0]);
        write_addresses(&mut out, stack);
        let labels: Vec<String> = s
            .labels
            .iter()
            .filter_map(|l| match l {
                Label::Str(k, v) => Some(format!("{k:?}:{v:?}")),
                Label::Num(..) => None,
            })
            .collect();
        if !labels.is_empty() {
            let _ = writeln!(out, "# labels: {{{}}}", labels.join(", "));
        }
        write_frames(&mut out, stack);
    }
    out
}

/// `goroutine?debug=2`: every thread (and task), whole stack (nothing trimmed), like a
/// panic dump: `thread TID "name" [state, wait channel]:`, then each frame's
/// function and `\tfile:line`. (Capped, as every text, by the handler.)
pub(crate) fn thread_dump(profile: &StackProfile) -> String {
    let whole = StackProfile {
        leaf_trim: LeafTrim::None,
        ..profile.clone()
    };
    let symbolized = symbolize(&whole);
    let mut out = String::new();
    for (s, stack) in whole.samples.iter().zip(&symbolized) {
        let block = &mut out;
        let id = |key: &str| {
            s.labels.iter().find_map(|l| match l {
                Label::Num(k, v) if *k == key => Some(*v),
                _ => None,
            })
        };
        let label = |key: &str| {
            s.labels.iter().find_map(|l| match l {
                Label::Str(k, v) if *k == key => Some(v.as_str()),
                _ => None,
            })
        };
        let mut state = label("state").unwrap_or("unknown").to_owned();
        if let Some(wait) = label("wchan") {
            state = format!("{state}, {wait}");
        }
        if label("task").is_some() {
            let task = id("task_id").map(|t| t.to_string()).unwrap_or_default();
            let _ = writeln!(block, "task {task} [{state}]:");
        } else {
            let _ = writeln!(
                block,
                "thread {} {:?} [{state}]:",
                id("thread_id").unwrap_or_default(),
                label("thread").unwrap_or_default()
            );
        }
        if let Some(why) = label("stack") {
            let _ = writeln!(block, "\t({why})");
        }
        for (pc, frames) in &stack.stack {
            if frames.is_empty() {
                let _ = writeln!(block, "{pc:#x}\n\t?");
            }
            for f in frames.iter() {
                let _ = writeln!(block, "{}\n\t{}:{}", f.name, f.file, f.line);
            }
        }
        block.push('\n');
    }
    out
}

/// `text` if it is at most `max` bytes, else the 400 that says so. Every
/// text producer's answer goes through this (the handler applies it to
/// `debug>0`).
pub(crate) fn cap(text: String, max: usize) -> Result<String, crate::Error> {
    if text.len() <= max {
        Ok(text)
    } else {
        Err(crate::Error::TextTooLarge {
            size: text.len(),
            limit: max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::cap;
    use crate::Error;

    #[test]
    fn text_within_the_limit_is_untouched_and_longer_text_refused() {
        assert_eq!(cap("a\nb\n".to_owned(), 4), Ok("a\nb\n".to_owned()));
        assert_eq!(
            cap("one\ntwo\nthree\n".to_owned(), 10),
            Err(Error::TextTooLarge {
                size: 14,
                limit: 10
            })
        );
    }
}
