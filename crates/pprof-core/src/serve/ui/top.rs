//! The top table: per function, the value in itself (flat) and in it and
//! what it calls (cum), as `go tool pprof -top` prints them.

use std::collections::HashMap;

use super::model::Stacks;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) name: String,
    /// `file:line` of the line with most of its value, or the file alone.
    pub(super) at: String,
    pub(super) flat: i64,
    pub(super) cum: i64,
}

/// The table: rows by |flat| (then |cum|), largest first, and the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Top {
    pub(super) rows: Vec<Row>,
    pub(super) total: i64,
}

/// One function's running totals while the table is counted.
#[derive(Default)]
struct Tally {
    flat: i64,
    cum: i64,
    file: String,
    /// Value per line seen in it, to name the line with most.
    lines: HashMap<i64, i64>,
}

impl Tally {
    fn into_row(self, name: String) -> Row {
        let line = self
            .lines
            .into_iter()
            .max_by_key(|(line, weight)| (*weight, -*line))
            .map_or(0, |(line, _)| line);
        let at = match (self.file.is_empty(), line) {
            (true, _) => String::new(),
            (false, 0) => self.file,
            (false, line) => format!("{}:{line}", self.file),
        };
        Row {
            name,
            at,
            flat: self.flat,
            cum: self.cum,
        }
    }
}

/// The top table of the kept samples' value `index`. Values may be
/// negative (a delta's shrinking stacks); `sign` -1 counts a profile as
/// the "before" of a difference.
pub(super) fn top(parts: &[(&Stacks, usize, &[bool], i64)]) -> Top {
    let mut tallies: HashMap<String, Tally> = HashMap::new();
    let mut total = 0i64;
    for (stacks, index, keep, sign) in parts {
        for (sample, _) in stacks.samples.iter().zip(keep.iter()).filter(|(_, k)| **k) {
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
            let mut seen: Vec<u32> = Vec::with_capacity(sample.frames.len());
            for (depth, (function, line)) in sample.frames.iter().enumerate().rev() {
                let f = &stacks.functions[*function as usize];
                let tally = tallies.entry(f.name.clone()).or_insert_with(|| Tally {
                    file: f.file.clone(),
                    ..Tally::default()
                });
                if depth + 1 == sample.frames.len() {
                    tally.flat = tally.flat.saturating_add(value);
                }
                // A recursive function counts once per sample in cum.
                if !seen.contains(function) {
                    seen.push(*function);
                    tally.cum = tally.cum.saturating_add(value);
                    *tally.lines.entry(*line).or_default() += value.saturating_abs();
                }
            }
        }
    }
    let mut rows: Vec<Row> = tallies
        .into_iter()
        .map(|(name, tally)| tally.into_row(name))
        .filter(|r| r.flat != 0 || r.cum != 0)
        .collect();
    rows.sort_by(|a, b| {
        (b.flat.unsigned_abs(), b.cum.unsigned_abs(), &a.name).cmp(&(
            a.flat.unsigned_abs(),
            a.cum.unsigned_abs(),
            &b.name,
        ))
    });
    Top { rows, total }
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
        let t = top(&[(&s, 0, &keep, 1)]);
        assert_eq!(t.total, 10);
        let row = |n: &str| t.rows.iter().find(|r| r.name == n).map(|r| (r.flat, r.cum));
        assert_eq!(t.rows[0].name, "eat");
        assert_eq!(row("eat"), Some((6, 6)));
        assert_eq!(row("live"), Some((1, 7)));
        assert_eq!(row("main"), Some((3, 10)));
        assert_eq!(t.rows[0].at, "src/zoo.rs:7");
    }

    #[test]
    fn a_difference_subtracts_the_before() {
        let before = Stacks::from_proto(&proto(&["cpu"], &[(&["eat"], &[5]), (&["nap"], &[2])]))
            .expect("resolves");
        let after = Stacks::from_proto(&proto(&["cpu"], &[(&["eat"], &[1]), (&["nap"], &[2])]))
            .expect("resolves");
        let keep = vec![true; 2];
        let t = top(&[(&after, 0, &keep, 1), (&before, 0, &keep, -1)]);
        assert_eq!(t.total, -4);
        assert_eq!(t.rows.len(), 1, "nap did not change: {t:?}");
        assert_eq!((t.rows[0].name.as_str(), t.rows[0].flat), ("eat", -4));
    }
}
