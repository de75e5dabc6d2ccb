//! Flame graphs by inferno (cargo-flamegraph's engine): our stacks become
//! a tree of frames (one node per function under its caller's node, built
//! in one pass over the samples), its widest frames become inferno's
//! folded lines, and inferno draws the interactive SVG (click to zoom,
//! reset, search with the matched share), plain or differential. The work
//! is linear in the frames, and what inferno is given is bounded however
//! deep or wide the profile.

use std::collections::HashMap;
use std::fmt::Write;

use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Direction, FuncFrameAttrsMap, Options};

use super::html;
use super::model::Stacks;
use crate::Error;
use crate::profiles::Cancel;

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
/// XML prologue), its script and style carrying the page's `nonce`, or
/// `None` when nothing was sampled. Stops, with an error nobody reads,
/// once `cancel` is set (the client went away).
pub(super) fn svg(
    graph: &Graph<'_>,
    title: &str,
    nonce: &str,
    cancel: &Cancel,
) -> Result<Option<String>, Error> {
    let (tree, unit, differential) = match *graph {
        Graph::Plain {
            stacks,
            index,
            keep,
        } => {
            let mut tree = Tree::default();
            tree.add(stacks, index, keep, Side::After, cancel)?;
            (tree, stacks.unit(index), false)
        }
        Graph::Diff {
            before,
            before_index,
            before_keep,
            after,
            after_index,
            after_keep,
        } => {
            let mut tree = Tree::default();
            tree.add(before, before_index, before_keep, Side::Before, cancel)?;
            tree.add(after, after_index, after_keep, Side::After, cancel)?;
            (tree, after.unit(after_index), true)
        }
    };
    let drawn = tree.widest(MAX_FRAMES, MAX_FOLDED_BYTES);
    if drawn.is_empty() {
        return Ok(None);
    }
    cancel.check()?;
    let lines = tree.folded_lines(&drawn, differential);
    let mut options = options(title, unit.to_owned(), &tree.locations(&drawn));
    let mut out = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)
        .map_err(|e| Error::Profiler(format!("could not draw the flame graph: {e}")))?;
    let svg = String::from_utf8(out)
        .map_err(|_| Error::Profiler("the flame graph is not UTF-8".to_owned()))?;
    // The page calls inferno's `init` itself once the element is in place;
    // inferno's own script and style run under the page's nonce.
    let start = svg.find("<svg").unwrap_or(0);
    Ok(Some(
        svg[start..]
            .replacen(r#" onload="init(evt)""#, "", 1)
            .replacen(
                r#"<style type="text/css">"#,
                &format!(r#"<style type="text/css" nonce="{nonce}">"#),
                1,
            )
            .replacen(
                r#"<script type="text/ecmascript">"#,
                &format!(r#"<script type="text/ecmascript" nonce="{nonce}">"#),
                1,
            ),
    ))
}

/// Which profile of a graph a sample's value counts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// A frame of the graph: a function called along its parent's path.
#[derive(Debug, Clone)]
struct Node {
    parent: u32,
    /// Its function, as an index into [`Tree::names`].
    name: u32,
    /// Its width in either profile: the values of the samples through it.
    before: u64,
    after: u64,
    /// The length of its path as a folded line (`a;b;c`), in bytes.
    text: u64,
}

/// The graph's frames: a trie of (parent, function), `nodes[0]` its root
/// (inferno's "all"); sums saturate, so no value overflows them.
#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
    children: HashMap<(u32, u32), u32>,
    /// Function names as frames show them (see [`folded_name`]), once each,
    /// for both profiles of a diff: frames of one name merge, as inferno
    /// merges them.
    names: Vec<String>,
    by_name: HashMap<String, u32>,
    /// Per name, the `file:line` that carries most of its value.
    places: HashMap<u32, (String, u64)>,
}

impl Default for Tree {
    fn default() -> Self {
        Self {
            nodes: vec![Node {
                parent: 0,
                name: 0,
                before: 0,
                after: 0,
                text: 0,
            }],
            children: HashMap::new(),
            names: Vec::new(),
            by_name: HashMap::new(),
            places: HashMap::new(),
        }
    }
}

/// How often (in samples) the work looks whether its client is still there.
const CHECK_EVERY: usize = 4096;

impl Tree {
    /// Add each kept sample of `stacks` (its value `index`) along its path.
    fn add(
        &mut self,
        stacks: &Stacks,
        index: usize,
        keep: &[bool],
        side: Side,
        cancel: &Cancel,
    ) -> Result<(), Error> {
        let ids: Vec<u32> = stacks
            .functions
            .iter()
            .map(|f| self.name_id(&f.name))
            .collect();
        let mut lines: HashMap<(u32, i64), u64> = HashMap::new();
        let samples = stacks.samples.iter().zip(keep).filter(|(_, k)| **k);
        for (i, (sample, _)) in samples.enumerate() {
            if i % CHECK_EVERY == 0 {
                cancel.check()?;
            }
            // A delta's shrinking stacks have negative values: they have no
            // width of their own (the differential view shows them).
            let value = u64::try_from(sample.values.get(index).copied().unwrap_or(0)).unwrap_or(0);
            if value == 0 || sample.frames.is_empty() {
                continue;
            }
            let mut node = 0;
            self.widen(node, side, value);
            for (function, line) in &sample.frames {
                node = self.child(node, ids[*function as usize]);
                self.widen(node, side, value);
                let weight = lines.entry((*function, *line)).or_default();
                *weight = weight.saturating_add(value);
            }
        }
        // Each function's place: the line with most value (the lower on a tie).
        let mut best: HashMap<u32, (i64, u64)> = HashMap::new();
        for ((function, line), value) in lines {
            let entry = best.entry(function).or_insert((line, 0));
            if value > entry.1 || (value == entry.1 && line < entry.0) {
                *entry = (line, value);
            }
        }
        for (function, (line, value)) in best {
            let file = stacks.file(function);
            if file.is_empty() {
                continue;
            }
            let mut at = html::shown(file).into_owned();
            if line > 0 {
                let _ = write!(at, ":{line}");
            }
            // The first profile that names a function names its place.
            self.places
                .entry(ids[function as usize])
                .or_insert((at, value));
        }
        Ok(())
    }

    fn name_id(&mut self, name: &str) -> u32 {
        let name = folded_name(name);
        if let Some(id) = self.by_name.get(&name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.clone());
        self.by_name.insert(name, id);
        id
    }

    fn widen(&mut self, node: u32, side: Side, value: u64) {
        let node = &mut self.nodes[node as usize];
        let width = match side {
            Side::Before => &mut node.before,
            Side::After => &mut node.after,
        };
        *width = width.saturating_add(value);
    }

    /// The node for `name` called from `parent`, new if need be.
    fn child(&mut self, parent: u32, name: u32) -> u32 {
        let Self {
            nodes,
            children,
            names,
            ..
        } = self;
        *children.entry((parent, name)).or_insert_with(|| {
            let text = nodes[parent as usize]
                .text
                .saturating_add(names[name as usize].len() as u64 + 1);
            nodes.push(Node {
                parent,
                name,
                before: 0,
                after: 0,
                text,
            });
            (nodes.len() - 1) as u32
        })
    }

    /// The frames to draw: the widest ones (by the `after` profile), at
    /// most `max` of them and at most `max_text` bytes of folded lines,
    /// frames of equal width kept or cut together. A frame's callers are
    /// at least as wide, so they are drawn with it; what is cut is under
    /// a pixel wide at any sensible `max`, and stays counted in the
    /// widths of the frames above it.
    fn widest(&self, max: usize, max_text: u64) -> Vec<u32> {
        let nodes = &self.nodes;
        let mut order: Vec<u32> = (1..nodes.len() as u32)
            .filter(|n| nodes[*n as usize].after > 0)
            .collect();
        // Widest first; on a tie the older node, so a caller before its callees.
        order.sort_unstable_by(|a, b| {
            let (x, y) = (&nodes[*a as usize], &nodes[*b as usize]);
            y.after.cmp(&x.after).then(a.cmp(b))
        });
        // The folded text the kept frames make: a frame is a line of its own
        // while some of its value is not in kept frames below it.
        let cost = |n: u32| nodes[n as usize].text.saturating_add(48);
        let mut below = vec![(0u64, 0u64); nodes.len()];
        let mut emits = vec![false; nodes.len()];
        let (mut text, mut kept, mut i) = (0u64, 0, 0);
        while i < order.len() {
            let width = nodes[order[i] as usize].after;
            let mut j = i;
            while j < order.len() && nodes[order[j] as usize].after == width {
                let node = order[j];
                emits[node as usize] = true;
                text = text.saturating_add(cost(node));
                let (n, p) = (&nodes[node as usize], nodes[node as usize].parent);
                if p != 0 {
                    let sums = &mut below[p as usize];
                    sums.0 = sums.0.saturating_add(n.before);
                    sums.1 = sums.1.saturating_add(n.after);
                    let parent = &nodes[p as usize];
                    let still = parent.after > sums.1 || parent.before > sums.0;
                    if emits[p as usize] && !still {
                        emits[p as usize] = false;
                        text = text.saturating_sub(cost(p));
                    }
                }
                j += 1;
            }
            if j > max || text > max_text {
                break;
            }
            kept = j;
            i = j;
        }
        order.truncate(kept);
        order
    }

    /// inferno's input for the `drawn` frames: `a;b;c after`, or `a;b;c
    /// before after` for a differential graph, one line per frame with
    /// value of its own. Values are scaled down together if the drawn
    /// total would pass 2⁵³, where the page's script (JavaScript numbers)
    /// and inferno's sums stay exact.
    fn folded_lines(&self, drawn: &[u32], differential: bool) -> Vec<String> {
        let nodes = &self.nodes;
        let mut below = vec![(0u64, 0u64); nodes.len()];
        for n in drawn {
            let node = &nodes[*n as usize];
            let sums = &mut below[node.parent as usize];
            sums.0 = sums.0.saturating_add(node.before);
            sums.1 = sums.1.saturating_add(node.after);
        }
        // The widths drawn are `after`'s; inferno subtracts each line's
        // `before` from its `after`, so those are kept under 2⁵³ as well.
        let shift = (64 - nodes[0].after.leading_zeros()).saturating_sub(53);
        let mut lines = Vec::with_capacity(drawn.len());
        let mut path: Vec<&str> = Vec::new();
        for n in drawn {
            let node = &nodes[*n as usize];
            let own_before =
                (node.before.saturating_sub(below[*n as usize].0) >> shift).min(1 << 53);
            let own_after = node.after.saturating_sub(below[*n as usize].1) >> shift;
            if own_before == 0 && own_after == 0 {
                continue;
            }
            path.clear();
            let mut at = *n;
            while at != 0 {
                path.push(&self.names[nodes[at as usize].name as usize]);
                at = nodes[at as usize].parent;
            }
            let mut line = String::with_capacity(node.text as usize + 48);
            for (i, name) in path.iter().rev().enumerate() {
                if i > 0 {
                    line.push(';');
                }
                line.push_str(name);
            }
            if differential {
                let _ = write!(line, " {own_before}");
            }
            let _ = write!(line, " {own_after}");
            lines.push(line);
        }
        lines
    }

    /// The `file:line` of each drawn frame's function.
    fn locations(&self, drawn: &[u32]) -> HashMap<&str, &str> {
        drawn
            .iter()
            .filter_map(|n| {
                let name = self.nodes[*n as usize].name;
                let (at, _) = self.places.get(&name)?;
                Some((self.names[name as usize].as_str(), at.as_str()))
            })
            .collect()
    }
}

/// How inferno draws our graphs.
fn options<'a>(title: &str, unit: String, locations: &HashMap<&str, &str>) -> Options<'a> {
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

/// The most bytes of folded lines inferno is given (each drawn frame's
/// path, once per frame with value of its own): what it reads and keeps
/// while it lays the frames out.
const MAX_FOLDED_BYTES: u64 = 16 << 20;

/// A function's name as a frame of a folded line: `;` separates frames and
/// a space the counts, so those become look-alikes (U+037E, U+00A0); line
/// breaks and tabs become spaces of the same kind. Shortened as a page
/// shows names ([`html::shown`]).
fn folded_name(name: &str) -> String {
    let name: String = html::shown(name)
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
fn frame_attributes(locations: &HashMap<&str, &str>) -> FuncFrameAttrsMap {
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
        let svg = svg(&graph, "cpu <&>", "n0nce", &Cancel::default())
            .expect("draws")
            .expect("has samples");
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
        assert!(svg.contains(r#"<script type="text/ecmascript" nonce="n0nce">"#));
        assert!(svg.contains(r#"<style type="text/css" nonce="n0nce">"#));
    }

    /// The names of the frames `widest` keeps of these stacks (root first).
    fn kept(list: &[(&[&str], &[i64])], max: usize, max_text: u64) -> Vec<String> {
        let s = stacks(list);
        let mut tree = Tree::default();
        let keep = vec![true; s.samples.len()];
        tree.add(&s, 0, &keep, Side::After, &Cancel::default())
            .expect("not cancelled");
        let mut names: Vec<String> = tree
            .widest(max, max_text)
            .iter()
            .map(|n| tree.names[tree.nodes[*n as usize].name as usize].clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_graph_keeps_its_widest_frames_when_it_has_too_many() {
        // a;b (6), a;c (3), a;d (1): frames a=10, b=6, c=3, d=1.
        let list: &[(&[&str], &[i64])] = &[
            (&["b", "a"], &[6]),
            (&["c", "a"], &[3]),
            (&["d", "a"], &[1]),
        ];
        assert_eq!(kept(list, 4, u64::MAX), ["a", "b", "c", "d"]);
        assert_eq!(kept(list, 3, u64::MAX), ["a", "b", "c"]);
        assert_eq!(kept(list, 2, u64::MAX), ["a", "b"]);
        // Ties are cut together: a=4, b=c=d=1 with room for 2 keeps only a.
        let ties: &[(&[&str], &[i64])] = &[
            (&["b", "a"], &[1]),
            (&["c", "a"], &[1]),
            (&["d", "a"], &[1]),
            (&["a"], &[1]),
        ];
        assert_eq!(kept(ties, 2, u64::MAX), ["a"]);
        // The text budget cuts too: a frame is a line (its path and 48
        // bytes) while some of its value is in no kept frame below it: a
        // (2 + 48) until d is kept too, b, c, d (4 + 48 each).
        assert_eq!(kept(list, 4, 156), ["a", "b", "c", "d"]);
        assert_eq!(kept(list, 4, 155), ["a", "b", "c"]);
        assert_eq!(kept(list, 4, 153), ["a", "b"]);
        assert_eq!(kept(list, 4, 50), ["a"]);
        assert!(kept(list, 4, 49).is_empty());
    }

    #[test]
    fn the_tree_is_linear_in_the_frames_and_shares_paths() {
        // 100 samples down one 300-deep chain, and one ending half way
        // down it: the tree has a node per distinct path, not per frame.
        let chain: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
        let names: Vec<&str> = chain.iter().map(String::as_str).collect();
        let mut list: Vec<(&[&str], &[i64])> = vec![(&names[..], &[1]); 100];
        list.push((&names[150..], &[7]));
        let s = stacks(&list);
        let mut tree = Tree::default();
        tree.add(
            &s,
            0,
            &vec![true; list.len()],
            Side::After,
            &Cancel::default(),
        )
        .expect("not cancelled");
        assert_eq!(tree.nodes.len(), 1 + 300);
        assert_eq!(tree.nodes[0].after, 107);
        let leaf = tree.nodes.last().map(|n| n.after);
        assert_eq!(leaf, Some(100));
        // A cancelled drawing stops.
        let cancel = Cancel::default();
        cancel.cancel();
        assert!(
            Tree::default()
                .add(&s, 0, &vec![true; list.len()], Side::After, &cancel)
                .is_err()
        );
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
        let drawn = svg(&graph, "diff", "n", &Cancel::default())
            .expect("draws")
            .expect("has samples");
        // inferno writes the change after the share: +80% of the total for eat.
        assert!(drawn.contains("eat (9 count, 90.00%; +80.00%)"), "{drawn}");
        assert!(drawn.contains("nap (1 count, 10.00%; -40.00%)"), "{drawn}");
        let empty = stacks(&[(&["eat"], &[0])]);
        let graph = Graph::Plain {
            stacks: &empty,
            index: 0,
            keep: &[true],
        };
        assert_eq!(
            svg(&graph, "none", "n", &Cancel::default()).ok(),
            Some(None)
        );
    }
}
