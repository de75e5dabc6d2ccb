//! The top table: per function, the value in itself (flat) and in it and
//! what it calls (cum), as `go tool pprof -top` prints them.

use std::cmp::Reverse;
use std::collections::HashMap;

use super::model::Stacks;
use crate::Error;
use crate::profiles::Cancel;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row<'a> {
    pub(super) name: &'a str,
    /// The source file, empty when unknown.
    pub(super) file: &'a str,
    /// The line with most of its value, 0 when unknown.
    pub(super) line: i64,
    pub(super) flat: i64,
    pub(super) cum: i64,
}

/// The table: rows by |flat| (then |cum|), largest first, and the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Top<'a> {
    pub(super) rows: Vec<Row<'a>>,
    pub(super) total: i64,
}

/// One function's running totals while the table is counted.
#[derive(Default)]
struct Tally {
    flat: i64,
    cum: i64,
    /// Value per line seen in it, to name the line with most.
    lines: HashMap<i64, i64>,
}

impl Tally {
    /// The line with most value (the lower on a tie), 0 when none.
    fn line(&self) -> i64 {
        self.lines
            .iter()
            .max_by_key(|(line, weight)| (**weight, Reverse(**line)))
            .map_or(0, |(line, _)| *line)
    }

    fn merge(&mut self, other: Tally) {
        self.flat = self.flat.saturating_add(other.flat);
        self.cum = self.cum.saturating_add(other.cum);
        for (line, weight) in other.lines {
            let w = self.lines.entry(line).or_default();
            *w = w.saturating_add(weight);
        }
    }
}

/// The top table of the kept samples' value `index`. Values may be
/// negative (a delta's shrinking stacks); `sign` -1 counts a profile as
/// the "before" of a difference. Linear in the frames; every sum
/// saturates. Stops once `cancel` is set (the client went away).
pub(super) fn top<'a>(
    parts: &[(&'a Stacks, usize, &[bool], i64)],
    cancel: &Cancel,
) -> Result<Top<'a>, Error> {
    let mut by_name: HashMap<&'a str, (&'a str, Tally)> = HashMap::new();
    let mut total = 0i64;
    for (stacks, index, keep, sign) in parts {
        let mut tallies: Vec<Tally> = std::iter::repeat_with(Tally::default)
            .take(stacks.functions.len())
            .collect();
        // The set of functions already counted in the current sample:
        // `seen[f]` holds the number of the sample that last counted f.
        let mut seen: Vec<usize> = vec![0; stacks.functions.len()];
        let samples = stacks.samples.iter().zip(keep.iter()).filter(|(_, k)| **k);
        for (number, (sample, _)) in samples.enumerate() {
            if number % 4096 == 0 {
                cancel.check()?;
            }
            let value = sample
                .values
                .get(*index)
                .copied()
                .unwrap_or(0)
                .saturating_mul(*sign);
            if value == 0 {
                continue;
            }
            total = total.saturating_add(value);
            if let Some((leaf, _)) = sample.frames.last() {
                let tally = &mut tallies[*leaf as usize];
                tally.flat = tally.flat.saturating_add(value);
            }
            for (function, line) in sample.frames.iter().rev() {
                // A recursive function counts once per sample in cum.
                if seen[*function as usize] == number + 1 {
                    continue;
                }
                seen[*function as usize] = number + 1;
                let tally = &mut tallies[*function as usize];
                tally.cum = tally.cum.saturating_add(value);
                let weight = tally.lines.entry(*line).or_default();
                *weight = weight.saturating_add(value.saturating_abs());
            }
        }
        for (i, tally) in tallies.into_iter().enumerate() {
            if tally.flat == 0 && tally.cum == 0 {
                continue;
            }
            let function = &stacks.functions[i];
            let file = stacks.file(i as u32);
            by_name
                .entry(function.name.as_str())
                .or_insert_with(|| (file, Tally::default()))
                .1
                .merge(tally);
        }
    }
    let mut rows: Vec<Row<'a>> = by_name
        .into_iter()
        .map(|(name, (file, tally))| Row {
            name,
            file,
            line: tally.line(),
            flat: tally.flat,
            cum: tally.cum,
        })
        .filter(|r| r.flat != 0 || r.cum != 0)
        .collect();
    rows.sort_by(|a, b| {
        (b.flat.unsigned_abs(), b.cum.unsigned_abs(), a.name).cmp(&(
            a.flat.unsigned_abs(),
            a.cum.unsigned_abs(),
            b.name,
        ))
    });
    Ok(Top { rows, total })
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::proto;
    use super::*;

    #[test]
    fn flat_is_the_leaf_cum_every_frame_once() {
        let s = Stacks::from_proto(&proto(
            &["cpu"],
            &[
                (&["eat", "live", "main"], &[6]),
                (&["live", "main"], &[1]),
                (&["main", "main"], &[3]),
            ],
        ))
        .expect("resolves");
        let keep = vec![true; 3];
        let t = top(&[(&s, 0, &keep, 1)], &Cancel::default()).expect("not cancelled");
        assert_eq!(t.total, 10);
        let row = |n: &str| t.rows.iter().find(|r| r.name == n).map(|r| (r.flat, r.cum));
        assert_eq!(t.rows[0].name, "eat");
        assert_eq!(row("eat"), Some((6, 6)));
        assert_eq!(row("live"), Some((1, 7)));
        assert_eq!(row("main"), Some((3, 10)));
        assert_eq!((t.rows[0].file, t.rows[0].line), ("src/zoo.rs", 7));
    }

    #[test]
    fn a_difference_subtracts_the_before() {
        let before = Stacks::from_proto(&proto(&["cpu"], &[(&["eat"], &[5]), (&["nap"], &[2])]))
            .expect("resolves");
        let after = Stacks::from_proto(&proto(&["cpu"], &[(&["eat"], &[1]), (&["nap"], &[2])]))
            .expect("resolves");
        let keep = vec![true; 2];
        let t = top(
            &[(&after, 0, &keep, 1), (&before, 0, &keep, -1)],
            &Cancel::default(),
        )
        .expect("not cancelled");
        assert_eq!(t.total, -4);
        assert_eq!(t.rows.len(), 1, "nap did not change: {t:?}");
        assert_eq!((t.rows[0].name, t.rows[0].flat), ("eat", -4));
    }
}
