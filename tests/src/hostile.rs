//! Uploads built to hurt a page (issue 20): each a small gzipped
//! profile.proto that asks for far more work or memory than its size, made
//! here by code so no test carries a binary blob. The same functions give
//! the bench its worst upload accepted under the limits, and the browser
//! test its profiles of many stacks ([`named_stacks`]).

use std::io::Write;

use pprof_core::proto::{Function, Label, Line, Location, Profile, Sample, ValueType};
use prost::Message;

/// Gzip `raw` as `go tool pprof` saves a profile.
pub fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gz.write_all(raw);
    gz.finish().unwrap_or_default()
}

/// An empty profile with one sample type (`goroutine/count`, as a
/// goroutine page diffs it).
fn empty() -> Profile {
    Profile {
        string_table: vec![String::new(), "goroutine".into(), "count".into()],
        sample_type: vec![ValueType { ty: 1, unit: 2 }],
        ..Default::default()
    }
}

/// Add a function named `name` and a location of one line in it, both
/// with the id the function's position gives; that id.
fn add_function(p: &mut Profile, name: &str) -> u64 {
    let id = p.function.len() as u64 + 1;
    p.string_table.push(name.to_owned());
    let name = p.string_table.len() as i64 - 1;
    p.function.push(Function {
        id,
        name,
        system_name: name,
        filename: 0,
        start_line: 0,
    });
    p.location.push(Location {
        id,
        line: vec![Line {
            function_id: id,
            line: 0,
        }],
        ..Default::default()
    });
    id
}

/// [`empty`] with the given functions (`names`, id = position + 1), samples
/// left to the caller.
fn base(names: &[String]) -> Profile {
    let mut p = empty();
    for name in names {
        add_function(&mut p, name);
    }
    p
}

/// A gzipped goroutine profile of `stacks` (names leaf first), stack `i`
/// sampled `value(i)` times; each name one function.
pub fn named_stacks(stacks: &[&[&str]], value: impl Fn(usize) -> i64) -> Vec<u8> {
    let mut p = empty();
    let mut ids: std::collections::HashMap<&str, u64> = Default::default();
    for (i, stack) in stacks.iter().enumerate() {
        let location_id = stack
            .iter()
            .map(|name| {
                *ids.entry(name)
                    .or_insert_with(|| add_function(&mut p, name))
            })
            .collect();
        p.sample.push(Sample {
            location_id,
            value: vec![value(i)],
            label: vec![],
        });
    }
    gzip(&p.encode_to_vec())
}

/// Issue 20, point 1: one empty function, one location with `lines` empty
/// lines (each names that function), one sample naming that location
/// `repeats` times. At 10⁶ × 10⁶ it is about 3 KB gzipped and asks a page
/// for 10¹² frames.
pub fn location_named_many_times(lines: usize, repeats: usize) -> Vec<u8> {
    let p = Profile {
        function: vec![Function::default()],
        location: vec![Location {
            id: 1,
            line: vec![Line::default(); lines],
            ..Default::default()
        }],
        sample: vec![Sample {
            location_id: vec![1; repeats],
            value: vec![1],
            label: vec![],
        }],
        ..empty()
    };
    gzip(&p.encode_to_vec())
}

/// Issue 20, point 2: one sample `depth` frames deep, all one function
/// (about 1 KB gzipped at 10⁶).
pub fn deep_sample(depth: usize) -> Vec<u8> {
    let mut p = base(&["deep::recurse".to_owned()]);
    p.sample.push(Sample {
        location_id: vec![1; depth],
        value: vec![1],
        label: vec![],
    });
    gzip(&p.encode_to_vec())
}

/// Issue 20, point 3: one sample carrying `labels` empty labels: two
/// bytes each on the wire, some thirty decoded.
pub fn nested_labels(labels: usize) -> Vec<u8> {
    let mut p = base(&["labelled".to_owned()]);
    p.sample.push(Sample {
        location_id: vec![1],
        value: vec![1],
        label: vec![Label::default(); labels],
    });
    gzip(&p.encode_to_vec())
}

/// Issue 20, point 5: samples valued `i64::MAX` (and one `i64::MIN`),
/// under one root, so every sum over them overflows.
pub fn extreme_values() -> Vec<u8> {
    let names: Vec<String> = ["main", "a", "b", "c"].map(str::to_owned).to_vec();
    let mut p = base(&names);
    for (leaf, value) in [(2, i64::MAX), (3, i64::MAX), (4, i64::MAX), (4, i64::MIN)] {
        p.sample.push(Sample {
            location_id: vec![leaf, 1],
            value: vec![value],
            label: vec![],
        });
    }
    // Line numbers at the extremes too (the table names the line with most value).
    p.location[1].line[0].line = i64::MIN;
    p.location[2].line[0].line = i64::MAX;
    gzip(&p.encode_to_vec())
}

/// `samples` samples each `depth` frames deep, every stack its own path
/// from the root (sample `i` starts with function `i`, then runs down one
/// shared chain of `depth - 1` functions): as many distinct frames as a
/// flame graph can be asked for, at `samples × depth` frames in all.
pub fn distinct_deep_stacks(samples: usize, depth: usize) -> Vec<u8> {
    let chain = depth.saturating_sub(1);
    let mut names: Vec<String> = (0..chain).map(|i| format!("app::chain::f{i}")).collect();
    names.extend((0..samples).map(|i| format!("app::root{i}")));
    let mut p = base(&names);
    for i in 0..samples {
        // Leaf first: the chain, then this sample's own root.
        let mut location_id: Vec<u64> = (1..=chain as u64).rev().collect();
        location_id.push((chain + i) as u64 + 1);
        p.sample.push(Sample {
            location_id,
            value: vec![1 + i as i64 % 97],
            label: vec![],
        });
    }
    gzip(&p.encode_to_vec())
}

/// `samples` samples two frames deep, over `leaves` leaf functions and as
/// many roots as it takes, each (root, leaf) pair once: the widest
/// profile the limits let through (a sample is a record, a frame a
/// number on the wire).
pub fn wide_stacks(samples: usize, leaves: usize) -> Vec<u8> {
    let leaves = leaves.max(1);
    let roots = samples.div_ceil(leaves);
    let mut names: Vec<String> = (0..leaves).map(|i| format!("app::leaf{i}")).collect();
    names.extend((0..roots).map(|i| format!("app::root{i}")));
    let mut p = base(&names);
    for i in 0..samples {
        let (leaf, root) = (i % leaves, leaves + i / leaves);
        p.sample.push(Sample {
            location_id: vec![leaf as u64 + 1, root as u64 + 1],
            value: vec![1 + i as i64 % 13],
            label: vec![],
        });
    }
    gzip(&p.encode_to_vec())
}

/// One stack whose function is named `bytes` bytes long: the largest
/// string the decoded limit lets through, shown cut short.
pub fn long_name(bytes: usize) -> Vec<u8> {
    let mut p = base(&["x".repeat(bytes)]);
    p.sample.push(Sample {
        location_id: vec![1],
        value: vec![1],
        label: vec![],
    });
    gzip(&p.encode_to_vec())
}
