//! Flame graphs by inferno (cargo-flamegraph's engine): our stacks become
//! its folded lines, it draws the interactive SVG (click to zoom, reset,
//! search with the matched share), plain or differential.

use std::collections::HashMap;
use std::fmt::Write;

use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Direction, FuncFrameAttrsMap, Options};

use super::model::Stacks;
use crate::Error;

/// What to draw: one profile, or how `after` differs from `before`.
pub(super) enum Graph<'a> {
    Plain {
        stacks: &'a Stacks,
        index: usize,
        keep: &'a [bool],
    },
    Diff {
        before: &'a Stacks,
        before_index: usize,
        before_keep: &'a [bool],
        after: &'a Stacks,
        after_index: usize,
        after_keep: &'a [bool],
    },
}

/// The flame graph as an `<svg>` element to put in a page (without the
/// XML prologue), or `None` when nothing was sampled.
pub(super) fn svg(graph: &Graph<'_>, title: &str) -> Result<Option<String>, Error> {
    let Folded {
        mut lines,
        locations,
        unit,
        differential,
    } = folded(graph);
    if !lines.iter().any(|l| !l.ends_with(" 0")) {
        return Ok(None);
    }
    lines.sort_unstable();
    let min_width = min_width(&folded_widths(&lines, differential), MAX_FRAMES);
    let mut options = options(title, unit, &locations, min_width);
    let mut out = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)
        .map_err(|e| Error::Profiler(format!("could not draw the flame graph: {e}")))?;
    let svg = String::from_utf8(out)
        .map_err(|_| Error::Profiler("the flame graph is not UTF-8".to_owned()))?;
    // The page calls inferno's `init` itself once the element is in place.
    let start = svg.find("<svg").unwrap_or(0);
    Ok(Some(svg[start..].replacen(r#" onload="init(evt)""#, "", 1)))
}

/// A graph as inferno's folded lines (`a;b;c 5`, or `a;b;c 3 5` for a
/// differential one) and the frames' `file:line` tooltips.
struct Folded {
    lines: Vec<String>,
    locations: HashMap<String, String>,
    unit: String,
    differential: bool,
}

fn folded(graph: &Graph<'_>) -> Folded {
    let mut folded: HashMap<String, (u64, u64)> = HashMap::new();
    let mut locations: HashMap<String, String> = HashMap::new();
    let (unit, differential) = match *graph {
        Graph::Plain {
            stacks,
            index,
            keep,
        } => {
            let add = |c: &mut (u64, u64), v| c.1 += v;
            fold(stacks, index, keep, &mut folded, &mut locations, add);
            (stacks.unit(index).to_owned(), false)
        }
        Graph::Diff {
            before,
            before_index,
            before_keep,
            after,
            after_index,
            after_keep,
        } => {
            let was = |c: &mut (u64, u64), v| c.0 += v;
            let is = |c: &mut (u64, u64), v| c.1 += v;
            fold(
                before,
                before_index,
                before_keep,
                &mut folded,
                &mut locations,
                was,
            );
            fold(
                after,
                after_index,
                after_keep,
                &mut folded,
                &mut locations,
                is,
            );
            (after.unit(after_index).to_owned(), true)
        }
    };
    Folded {
        lines: folded_lines(&folded, differential),
        locations,
        unit,
        differential,
    }
}

/// inferno's input lines: `stack after`, or `stack before after` for a
/// differential graph; stacks with no value on either side are left out.
fn folded_lines(folded: &HashMap<String, (u64, u64)>, differential: bool) -> Vec<String> {
    folded
        .iter()
        .filter(|(_, (before, after))| *before > 0 || *after > 0)
        .map(|(stack, &(before, after))| {
            if differential {
                format!("{stack} {before} {after}")
            } else {
                format!("{stack} {after}")
            }
        })
        .collect()
}

/// How inferno draws our graphs.
fn options<'a>(
    title: &str,
    unit: String,
    locations: &HashMap<String, String>,
    min_width: f64,
) -> Options<'a> {
    let mut options = Options::default();
    options.title = title.to_owned();
    options.count_name = if unit.is_empty() {
        "count".into()
    } else {
        unit
    };
    options.colors = Palette::Multi(MultiPalette::Rust);
    options.hash = true;
    options.font_type = "monospace".to_owned();
    // Roots on top, as pprof's own flame graph draws them: the wide frames
    // are in view without scrolling past a tall stack.
    options.direction = Direction::Inverted;
    // A fixed width, scaled to the page by CSS: inferno then lays out the
    // labels here, not in the browser (its "fluid" mode redoes every label
    // twice on load, most of the load time of a large graph).
    options.image_width = Some(IMAGE_WIDTH);
    options.name_type = "Function:".to_owned();
    options.func_frameattrs = frame_attributes(locations);
    options.min_width = options.min_width.max(min_width);
    options
}

/// The flame graph's width in SVG units (the page scales it to fit).
const IMAGE_WIDTH: usize = 1400;

/// The most frames a flame graph draws: at ten thousand, the browser
/// spends about a second parsing and laying them out (measured on the
/// project's 2-core machine), while frames past that many are a fraction
/// of a pixel wide at the page's width. Focusing on a function draws its
/// stacks again at full detail.
const MAX_FRAMES: usize = 8_000;

/// Each drawn stack's width (the later count of a differential line).
fn folded_widths(lines: &[String], differential: bool) -> Vec<(&str, u64)> {
    lines
        .iter()
        .filter_map(|line| {
            let (rest, last) = line.rsplit_once(' ')?;
            let stack = if differential {
                rest.rsplit_once(' ')?.0
            } else {
                rest
            };
            Some((stack, last.parse().ok()?))
        })
        .collect()
}

/// The smallest width (in percent, inferno's `min_width`) that keeps at
/// most `max` frames: the widest ones, frames of equal width kept or cut
/// together. 0 when every frame fits.
fn min_width(stacks: &[(&str, u64)], max: usize) -> f64 {
    let mut nodes: HashMap<&str, u64> = HashMap::new();
    let mut total = 0u64;
    for (stack, width) in stacks {
        total += width;
        for (i, c) in stack.char_indices() {
            if c == ';' {
                *nodes.entry(&stack[..i]).or_default() += width;
            }
        }
        *nodes.entry(stack).or_default() += width;
    }
    if nodes.len() <= max || total == 0 {
        return 0.0;
    }
    let mut widths: Vec<u64> = nodes.into_values().collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    // inferno drops frames narrower than min_width: keep the widest `max`,
    // and cut the ones as narrow as the first frame that does not fit.
    let cut = widths[max];
    let keep = widths[..max]
        .iter()
        .rev()
        .find(|w| **w > cut)
        .copied()
        .unwrap_or(cut + 1);
    // Widths are whole numbers: half a unit below `keep` cuts exactly `cut`
    // and narrower, whatever inferno's floating point makes of the percent.
    100.0 * (keep as f64 - 0.5) / total as f64
}

/// Add each kept sample's stack, as a folded line, to `folded`, and each
/// function's file:line (the line that carries most of its value) to
/// `locations`.
fn fold(
    stacks: &Stacks,
    index: usize,
    keep: &[bool],
    folded: &mut HashMap<String, (u64, u64)>,
    locations: &mut HashMap<String, String>,
    add: impl Fn(&mut (u64, u64), u64),
) {
    let names: Vec<String> = stacks
        .functions
        .iter()
        .map(|f| folded_name(&f.name))
        .collect();
    let mut lines: HashMap<(u32, i64), u64> = HashMap::new();
    let mut stack = String::new();
    for (sample, _) in stacks.samples.iter().zip(keep).filter(|(_, k)| **k) {
        // A delta's shrinking stacks have negative values: they have no
        // width of their own (the differential view shows them).
        let value = u64::try_from(sample.values.get(index).copied().unwrap_or(0)).unwrap_or(0);
        if value == 0 || sample.frames.is_empty() {
            continue;
        }
        stack.clear();
        for (i, (function, line)) in sample.frames.iter().enumerate() {
            if i > 0 {
                stack.push(';');
            }
            stack.push_str(&names[*function as usize]);
            *lines.entry((*function, *line)).or_default() += value;
        }
        add(folded.entry(stack.clone()).or_default(), value);
    }
    let mut best: HashMap<u32, (i64, u64)> = HashMap::new();
    for ((function, line), value) in lines {
        let entry = best.entry(function).or_insert((line, 0));
        if value > entry.1 || (value == entry.1 && line < entry.0) {
            *entry = (line, value);
        }
    }
    for (function, (line, _)) in best {
        let f = &stacks.functions[function as usize];
        let mut at = f.file.clone();
        if line > 0 {
            let _ = write!(at, ":{line}");
        }
        if !at.is_empty() {
            locations
                .entry(names[function as usize].clone())
                .or_insert(at);
        }
    }
}

/// A function's name as a frame of a folded line: `;` separates frames and
/// a space the counts, so those become look-alikes (U+037E, U+00A0); line
/// breaks and tabs become spaces of the same kind.
fn folded_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            ';' => '\u{37e}',
            c if c.is_whitespace() || c.is_control() => '\u{a0}',
            c => c,
        })
        .collect();
    if name.is_empty() {
        "?".to_owned()
    } else {
        name
    }
}

/// Each function's `data-loc="file:line"` on its frames, for the page's
/// hover card (inferno escapes attribute values when it writes them).
fn frame_attributes(locations: &HashMap<String, String>) -> FuncFrameAttrsMap {
    let mut spec = String::new();
    for (name, at) in locations {
        // The map's own text format: name, a tab, then `g_extra=...`.
        let at: String = at
            .chars()
            .map(|c| if c == '"' || c.is_control() { '\'' } else { c })
            .collect();
        let _ = writeln!(spec, "{name}\tg_extra=data-loc=\"{at}\"");
    }
    FuncFrameAttrsMap::from_reader(spec.as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::proto;
    use super::*;

    fn stacks(list: &[(&[&str], &[i64])]) -> Stacks {
        Stacks::from_proto(&proto(&["cpu"], list)).expect("resolves")
    }

    #[test]
    fn names_are_escaped_and_frames_carry_their_location() {
        let s = stacks(&[
            (&["Holder<T>::hold", "main"], &[3]),
            (&["<script>alert(1)</script>", "main"], &[1]),
            (&["[u8; 32]::len 12", "main"], &[1]),
        ]);
        let keep = vec![true; 3];
        let graph = Graph::Plain {
            stacks: &s,
            index: 0,
            keep: &keep,
        };
        let svg = svg(&graph, "cpu <&>").expect("draws").expect("has samples");
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("Holder&lt;T&gt;::hold"), "escaped name");
        assert!(!svg.contains("<script>alert"), "no raw markup from names");
        assert!(!svg.contains("Holder<T>"), "no raw generic name");
        assert!(svg.contains("cpu &lt;&amp;&gt;"), "escaped title");
        assert!(
            svg.contains(r#"data-loc="src/zoo.rs:7""#),
            "location attribute"
        );
        // The name with `;` and a trailing number stays one frame.
        assert!(
            svg.contains("[u8\u{37e}\u{a0}32]::len\u{a0}12 (1 count"),
            "{svg}"
        );
        assert!(!svg.contains("onload="));
    }

    #[test]
    fn a_graph_keeps_its_widest_frames_when_it_has_too_many() {
        // a;b (6), a;c (3), a;d (1): frames a=10, b=6, c=3, d=1.
        let stacks = [("a;b", 6), ("a;c", 3), ("a;d", 1)];
        assert_eq!(min_width(&stacks, 4), 0.0);
        assert_eq!(min_width(&stacks, 3), 25.0);
        assert_eq!(min_width(&stacks, 2), 55.0);
        // Ties are cut together: a=4, b=c=d=1 with room for 2 keeps only a.
        let ties = [("a;b", 1), ("a;c", 1), ("a;d", 1), ("a", 1)];
        assert_eq!(min_width(&ties, 2), 87.5);
    }

    #[test]
    fn a_diff_colours_growth_and_nothing_sampled_is_none() {
        let before = stacks(&[(&["eat", "main"], &[1]), (&["nap", "main"], &[5])]);
        let after = stacks(&[(&["eat", "main"], &[9]), (&["nap", "main"], &[1])]);
        let keep = vec![true; 2];
        let graph = Graph::Diff {
            before: &before,
            before_index: 0,
            before_keep: &keep,
            after: &after,
            after_index: 0,
            after_keep: &keep,
        };
        let drawn = svg(&graph, "diff").expect("draws").expect("has samples");
        // inferno writes the change after the share: +80% of the total for eat.
        assert!(drawn.contains("eat (9 count, 90.00%; +80.00%)"), "{drawn}");
        assert!(drawn.contains("nap (1 count, 10.00%; -40.00%)"), "{drawn}");
        let empty = stacks(&[(&["eat"], &[0])]);
        let graph = Graph::Plain {
            stacks: &empty,
            index: 0,
            keep: &[true],
        };
        assert_eq!(svg(&graph, "none").ok(), Some(None));
    }
}
