//! Go's legacy text formats (`debug=1`, `debug=2`), written into any
//! [`fmt::Write`] so the caller decides where they go and how far.

use std::fmt::{self, Write};

use super::frames::{Symbolized, symbolize};
use super::merge::Record;
use super::profile::{Label, LeafTrim, StackProfile};

/// One `#\t0xPC\tfunction\tfile:line` line per frame, inlined frames
/// included, then a blank line (Go's `printStackRecord`).
fn write_frames(out: &mut dyn Write, stack: &Symbolized) -> fmt::Result {
    for (pc, frames) in &stack.stack {
        if frames.is_empty() {
            writeln!(out, "#\t{pc:#x}")?;
        }
        // Go adds `+0xOFFSET` from the function's entry; the debug info we
        // read gives no entry address, so the offset is left out.
        for f in frames.iter() {
            writeln!(out, "#\t{pc:#x}\t{}\t{}:{}", f.name, f.file, f.line)?;
        }
    }
    out.write_char('\n')
}

/// The `@ 0x… 0x…` stack of a record: return addresses, as Go prints them.
fn write_addresses(out: &mut dyn Write, stack: &Symbolized) -> fmt::Result {
    out.write_str(" @")?;
    for (pc, _) in &stack.stack {
        write!(out, " {:#x}", pc + 1)?;
    }
    out.write_char('\n')
}

/// The profile's samples with their symbolized stacks, one per stack and
/// label set ([`merge::records`](super::merge::records)), ordered by the
/// value at `by`, largest first.
fn records(profile: &StackProfile, by: usize) -> Vec<Record<'_>> {
    let mut records = super::merge::records(profile);
    records.sort_by_key(|r| std::cmp::Reverse(r.values.get(by).copied().unwrap_or(0)));
    records
}

/// `heap profile: …` text for heap and allocs, largest live bytes first,
/// followed by the allocator's statistics.
pub(crate) fn heap(
    out: &mut dyn Write,
    profile: &StackProfile,
    stats: &[(&str, u64)],
) -> fmt::Result {
    let records = records(profile, 3);
    let mut total = [0i64; 4];
    for r in &records {
        for (t, v) in total.iter_mut().zip(&r.values) {
            *t += v;
        }
    }
    writeln!(
        out,
        "heap profile: {}: {} [{}: {}] @ heap/{}",
        total[2],
        total[3],
        total[0],
        total[1],
        2 * profile.period
    )?;
    for r in &records {
        let v = &r.values;
        write!(out, "{}: {} [{}: {}]", v[2], v[3], v[0], v[1])?;
        write_addresses(out, &r.stack)?;
        write_frames(out, &r.stack)?;
    }
    out.write_str("\n# jemalloc stats\n")?;
    for (name, value) in stats {
        writeln!(out, "# {name} = {value}")?;
    }
    Ok(())
}

/// The profile with every frame kept: text prints whole stacks, as Go does.
fn whole(profile: &StackProfile) -> StackProfile {
    StackProfile {
        leaf_trim: LeafTrim::None,
        ..profile.clone()
    }
}

/// `goroutine profile: total N` text (goroutine and threadcreate
/// `debug=1`): one record per distinct stack and labels, most frequent first.
pub(crate) fn counts(out: &mut dyn Write, name: &str, profile: &StackProfile) -> fmt::Result {
    let profile = whole(profile);
    let records = records(&profile, 0);
    let total: i64 = profile.samples.iter().map(|s| s.values[0]).sum();
    writeln!(out, "{name} profile: total {total}")?;
    for r in &records {
        write!(out, "{}", r.values[0])?;
        write_addresses(out, &r.stack)?;
        let labels: Vec<String> = r
            .sample
            .labels
            .iter()
            .filter_map(|l| match l {
                Label::Str(k, v) => Some(format!("{k:?}:{v:?}")),
                Label::User(k, v) => Some(format!("{k:?}:{v:?}")),
                Label::Num(..) => None,
            })
            .collect();
        if !labels.is_empty() {
            writeln!(out, "# labels: {{{}}}", labels.join(", "))?;
        }
        write_frames(out, &r.stack)?;
    }
    Ok(())
}

/// `goroutine?debug=2`: every thread (and task), whole stack (nothing trimmed), like a
/// panic dump: `thread TID "name" [state, wait channel]:`, then each frame's
/// function and `\tfile:line`.
pub(crate) fn thread_dump(out: &mut dyn Write, profile: &StackProfile) -> fmt::Result {
    let whole = whole(profile);
    for (s, stack) in whole.samples.iter().zip(symbolize(&whole)) {
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
        let user: Vec<String> = s
            .labels
            .iter()
            .filter_map(|l| match l {
                Label::User(k, v) => Some(format!("{k:?}:{v:?}")),
                _ => None,
            })
            .collect();
        let labels = if user.is_empty() {
            String::new()
        } else {
            format!(" labels: {{{}}}", user.join(", "))
        };
        if label("task").is_some() {
            let task = id("task_id").map(|t| t.to_string()).unwrap_or_default();
            writeln!(out, "task {task} [{state}]{labels}:")?;
        } else {
            writeln!(
                out,
                "thread {} {:?} [{state}]{labels}:",
                id("thread_id").unwrap_or_default(),
                label("thread").unwrap_or_default()
            )?;
        }
        if let Some(why) = label("stack") {
            writeln!(out, "\t({why})")?;
        }
        for (pc, frames) in &stack.stack {
            if frames.is_empty() {
                writeln!(out, "{pc:#x}\n\t?")?;
            }
            for f in frames.iter() {
                writeln!(out, "{}\n\t{}:{}", f.name, f.file, f.line)?;
            }
        }
        out.write_char('\n')?;
    }
    Ok(())
}

/// Go's mutex/block `debug=1` text: `--- NAME:`, `cycles/second=`, then
/// `<cycles> <count> @ addresses` and frame lines per stack, most delay
/// first. Our "cycles" are nanoseconds, so the rate is 10^9 per second and
/// pprof converts them back exactly. Values are already scaled by the
/// sampling rate, so no `sampling period` line is written (pprof would
/// scale them again).
pub(crate) fn contention(
    out: &mut dyn Write,
    name: &str,
    profile: &StackProfile,
    dropped: u64,
) -> fmt::Result {
    writeln!(out, "--- {name}:")?;
    writeln!(out, "cycles/second=1000000000")?;
    for r in &records(profile, 1) {
        write!(out, "{} {}", r.values[1], r.values[0])?;
        write_addresses(out, &r.stack)?;
        write_frames(out, &r.stack)?;
    }
    writeln!(out, "# dropped events (table full) = {dropped}")
}

/// A text answer being written, that stops at `limit` bytes: the write
/// that would cross it fails, and so does every later one, so a writer
/// over thousands of stacks gives up there instead of building the whole
/// text first. Never holds more than `limit` bytes (its buffer grows to
/// the limit at most). A `stop` check, asked at each write, ends it early
/// too (the client has gone).
pub(crate) struct BoundedWriter<'a> {
    text: String,
    limit: usize,
    over: bool,
    stopped: bool,
    stop: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a> BoundedWriter<'a> {
    /// An empty text that may grow to `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            limit,
            over: false,
            stopped: false,
            stop: None,
        }
    }

    /// Also stop writing as soon as `stop` says so.
    pub(crate) fn stopping_when(mut self, stop: &'a (dyn Fn() -> bool + Sync)) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The text, or why there is none: over the limit (the 400 that says
    /// so), stopped, or `written` (what the writer returned) failed.
    pub(crate) fn finish(self, written: fmt::Result) -> Result<String, WriteError> {
        if self.over {
            Err(WriteError::TooLarge(crate::error::Error::TextTooLarge {
                limit: self.limit,
            }))
        } else if self.stopped {
            Err(WriteError::Stopped)
        } else if written.is_err() {
            Err(WriteError::Failed)
        } else {
            Ok(self.text)
        }
    }
}

/// Why a [`BoundedWriter`] holds no text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// Over the limit: the error to answer.
    TooLarge(crate::error::Error),
    /// Its `stop` check said so.
    Stopped,
    /// The writer itself failed (a profile with no text form).
    Failed,
}

impl Write for BoundedWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.over || self.stopped {
            return Err(fmt::Error);
        }
        if self.stop.is_some_and(|stop| stop()) {
            self.stopped = true;
            return Err(fmt::Error);
        }
        let needed = self.text.len().saturating_add(s.len());
        if needed > self.limit {
            self.over = true;
            self.text = String::new();
            return Err(fmt::Error);
        }
        if needed > self.text.capacity() {
            // Double, as String would, but never past the limit.
            let target = needed.max(self.text.capacity() * 2).min(self.limit);
            self.text.reserve_exact(target - self.text.len());
        }
        self.text.push_str(s);
        Ok(())
    }
}

/// `text` if it is at most `max` bytes, else the 400 that says so: the
/// answers built whole before they are sent (`/cmdline`, `/symbol`).
pub(crate) fn cap(text: String, max: usize) -> Result<String, crate::error::Error> {
    if text.len() <= max {
        Ok(text)
    } else {
        Err(crate::error::Error::TextTooLarge { limit: max })
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use super::{BoundedWriter, WriteError, cap};
    use crate::error::Error;

    #[test]
    fn text_within_the_limit_is_untouched_and_longer_text_refused() {
        assert_eq!(cap("a\nb\n".to_owned(), 4), Ok("a\nb\n".to_owned()));
        assert_eq!(
            cap("one\ntwo\nthree\n".to_owned(), 10),
            Err(Error::TextTooLarge { limit: 10 })
        );
    }

    #[test]
    fn the_bounded_writer_stops_at_the_limit_and_never_holds_more() {
        let mut out = BoundedWriter::new(1000);
        let mut writes = 0;
        let written = (0..1_000_000).try_for_each(|i| {
            writes += 1;
            writeln!(out, "line {i}")
        });
        // It gave up at the write that crossed the limit, not at the end.
        assert!(writes < 200, "{writes} writes");
        assert!(out.text.capacity() <= 1000, "{}", out.text.capacity());
        assert_eq!(
            out.finish(written),
            Err(WriteError::TooLarge(Error::TextTooLarge { limit: 1000 }))
        );
        let mut out = BoundedWriter::new(12);
        let written = write!(out, "exactly 12 b");
        assert_eq!(out.finish(written), Ok("exactly 12 b".to_owned()));
        let stop = || true;
        let mut out = BoundedWriter::new(100).stopping_when(&stop);
        let written = write!(out, "x");
        assert_eq!(out.finish(written), Err(WriteError::Stopped));
    }
}
