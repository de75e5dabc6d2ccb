//! A profile as the pages read it: the profile.proto a tool would get
//! (our own, or one uploaded), with names resolved and stacks root first;
//! which sample type a page shows; which samples `focus` and `ignore` keep.

use std::collections::HashMap;

use regex::Regex;

use crate::Error;
use crate::format::protos;

/// The most frames one sample may have once its locations' inlined lines
/// are expanded: our own unwinder stops at 128 addresses, so our deepest
/// stack, every frame inlined several times over, fits; a recursion a
/// million deep (a kilobyte gzipped) does not. Checked before any frame
/// is copied.
pub(super) const MAX_DEPTH: usize = 4096;

/// The most frames a profile's samples may hold in all, once expanded (16
/// bytes each here, and a node of the flame graph's tree at most): 500
/// stacks at the deepest, or 20,000 of 100 frames. Checked before any
/// frame is copied.
pub(super) const MAX_FRAMES: usize = 2_000_000;

/// The most sample types a page reads (Go's profiles have one to four);
/// each is offered in the page's switch.
const MAX_SAMPLE_TYPES: usize = 64;

/// The longest sample type or unit name a page reads, in bytes.
const MAX_TYPE_NAME: usize = 256;

/// One function, as pprof groups frames: by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Function {
    pub(super) name: String,
    /// The source file of its first frame seen: an index into
    /// [`Stacks::files`] (0, the empty name, when unknown). Files are
    /// shared, never copied per function.
    pub(super) file: u32,
}

/// One sample: its frames root first, `(function index, line)`, and its
/// values, one per sample type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stack {
    pub(super) frames: Vec<(u32, i64)>,
    pub(super) values: Vec<i64>,
}

/// A profile that breaks the format's rules, saying which.
fn invalid(what: String) -> Error {
    Error::InvalidUpload(what)
}

/// A profile's string table; an index out of it is an error, not a panic.
#[derive(Clone, Copy)]
struct Strings<'a>(&'a [String]);

impl<'a> Strings<'a> {
    fn get(self, id: i64) -> Result<&'a str, Error> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(String::as_str)
            .ok_or_else(|| invalid(format!("string index {id} is out of range")))
    }
}

/// A profile, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Stacks {
    /// `(type, unit)` per value, in the profile's order.
    pub(super) types: Vec<(String, String)>,
    pub(super) default_type: Option<String>,
    pub(super) functions: Vec<Function>,
    /// The source files functions name, once each; `files[0]` is `""`.
    pub(super) files: Vec<String>,
    pub(super) samples: Vec<Stack>,
    pub(super) duration_nanos: i64,
}

/// What a profile's functions and locations resolve to while it is read.
struct Reading<'a> {
    strings: Strings<'a>,
    /// Function index by name (pprof groups frames by name).
    by_name: HashMap<String, u32>,
    /// File index by string index.
    files: HashMap<i64, u32>,
}

impl Stacks {
    /// Resolve a profile.proto, ours or anyone's: every id and string index
    /// is checked, and a profile that breaks the format's rules, or asks
    /// a page for more than it draws ([`MAX_DEPTH`], [`MAX_FRAMES`]), is
    /// an [`Error::InvalidUpload`] saying which, before the work.
    pub(super) fn from_proto(p: &protos::Profile) -> Result<Self, Error> {
        let strings = Strings(&p.string_table);
        let mut stacks = Stacks {
            duration_nanos: p.duration_nanos,
            files: vec![String::new()],
            ..Stacks::default()
        };
        if p.sample_type.len() > MAX_SAMPLE_TYPES {
            return Err(invalid(format!(
                "it has {} sample types, more than the {MAX_SAMPLE_TYPES} a page reads",
                p.sample_type.len()
            )));
        }
        for t in &p.sample_type {
            let (kind, unit) = (strings.get(t.ty)?, strings.get(t.unit)?);
            if kind.len().max(unit.len()) > MAX_TYPE_NAME {
                return Err(invalid(format!(
                    "a sample type's name is {} bytes long, more than the {MAX_TYPE_NAME} a page reads",
                    kind.len().max(unit.len())
                )));
            }
            stacks.types.push((kind.to_owned(), unit.to_owned()));
        }
        if stacks.types.is_empty() {
            return Err(invalid("it has no sample types".to_owned()));
        }
        let default = strings.get(p.default_sample_type)?;
        stacks.default_type = (!default.is_empty()).then(|| default.to_owned());
        let mut reading = Reading {
            strings,
            by_name: HashMap::new(),
            files: HashMap::from([(0, 0)]),
        };
        let function_ids = stacks.read_functions(&p.function, &mut reading)?;
        let locations = stacks.read_locations(&p.location, &function_ids, &mut reading)?;
        check_sizes(&p.sample, &locations)?;
        stacks.read_samples(&p.sample, &locations)?;
        Ok(stacks)
    }

    /// Group the profile's functions by name; the map gives each proto
    /// function id its index in `functions`.
    fn read_functions(
        &mut self,
        functions: &[protos::Function],
        reading: &mut Reading<'_>,
    ) -> Result<HashMap<u64, u32>, Error> {
        let mut function_ids = HashMap::new();
        for f in functions {
            let name = reading.strings.get(f.name)?;
            let index = self.function(if name.is_empty() { "?" } else { name }, reading)?;
            if let Some(function) = self.functions.get_mut(index as usize)
                && function.file == 0
            {
                function.file = match reading.files.get(&f.filename) {
                    Some(file) => *file,
                    None => {
                        let file = u32::try_from(self.files.len())
                            .map_err(|_| invalid("it names too many files".to_owned()))?;
                        self.files.push(reading.strings.get(f.filename)?.to_owned());
                        reading.files.insert(f.filename, file);
                        file
                    }
                };
            }
            function_ids.insert(f.id, index);
        }
        Ok(function_ids)
    }

    /// Each location's frames, outermost (caller) first, by location id.
    fn read_locations(
        &mut self,
        locations: &[protos::Location],
        function_ids: &HashMap<u64, u32>,
        reading: &mut Reading<'_>,
    ) -> Result<HashMap<u64, Vec<(u32, i64)>>, Error> {
        let mut frames_by_id = HashMap::new();
        for l in locations {
            let mut frames = Vec::with_capacity(l.line.len().max(1));
            for line in l.line.iter().rev() {
                let function = function_ids.get(&line.function_id).ok_or_else(|| {
                    invalid(format!(
                        "location {} names function {}, which is not in it",
                        l.id, line.function_id
                    ))
                })?;
                frames.push((*function, line.line));
            }
            if frames.is_empty() {
                // An unsymbolized address is still a frame, named by its address.
                frames.push((self.function(&format!("{:#x}", l.address), reading)?, 0));
            }
            frames_by_id.insert(l.id, frames);
        }
        Ok(frames_by_id)
    }

    /// The samples, their stacks root first.
    fn read_samples(
        &mut self,
        samples: &[protos::Sample],
        locations: &HashMap<u64, Vec<(u32, i64)>>,
    ) -> Result<(), Error> {
        let width = self.types.len();
        self.samples.reserve(samples.len());
        for s in samples {
            if s.value.len() != width {
                return Err(invalid(format!(
                    "a sample has {} values for {width} sample types",
                    s.value.len()
                )));
            }
            let mut frames = Vec::new();
            for id in s.location_id.iter().rev() {
                let location = locations.get(id).ok_or_else(|| {
                    invalid(format!("a sample names location {id}, which is not in it"))
                })?;
                frames.extend_from_slice(location);
            }
            self.samples.push(Stack {
                frames,
                values: s.value.clone(),
            });
        }
        Ok(())
    }

    /// The index of the function named `name`, new if need be (its file
    /// not yet known).
    fn function(&mut self, name: &str, reading: &mut Reading<'_>) -> Result<u32, Error> {
        if let Some(index) = reading.by_name.get(name) {
            return Ok(*index);
        }
        let index = u32::try_from(self.functions.len())
            .map_err(|_| invalid("it has too many functions".to_owned()))?;
        self.functions.push(Function {
            name: name.to_owned(),
            file: 0,
        });
        reading.by_name.insert(name.to_owned(), index);
        Ok(index)
    }

    /// The source file of function `index` (`""` when unknown).
    pub(super) fn file(&self, index: u32) -> &str {
        let file = self.functions.get(index as usize).map_or(0, |f| f.file);
        self.files.get(file as usize).map_or("", String::as_str)
    }

    /// The sum of the kept samples' value `index` (saturating: uploaded
    /// values may be anything).
    pub(super) fn total(&self, index: usize, keep: &[bool]) -> i64 {
        self.samples
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.values.get(index).copied().unwrap_or(0))
            .fold(0, i64::saturating_add)
    }

    /// The index of the sample type `kind` in a baseline, which must have it.
    pub(super) fn baseline_type_index(&self, kind: &str) -> Result<usize, Error> {
        self.types
            .iter()
            .position(|(t, _)| t == kind)
            .ok_or_else(|| Error::NoSuchSampleType {
                asked: kind.to_owned(),
                known: format!("{} in the baseline", self.type_names()),
            })
    }

    /// The sample types, as pprof lists them: `alloc_space, inuse_space`.
    pub(super) fn type_names(&self) -> String {
        self.types
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The value a page shows: `sample_index` by name or number, as pprof
    /// takes it; by default the profile's default type, else the last.
    pub(super) fn type_index(&self, asked: Option<&str>) -> Result<usize, Error> {
        type_index(&self.types, self.default_type.as_deref(), asked)
    }

    /// The unit of value `index` (`bytes`, `nanoseconds`, `count`).
    pub(super) fn unit(&self, index: usize) -> &str {
        self.types.get(index).map_or("", |(_, u)| u.as_str())
    }

    /// Which samples a page keeps: with `focus`, those with a frame whose
    /// function or file matches it; without those that match `ignore`
    /// (pprof's `-focus` and `-ignore`).
    pub(super) fn keep(&self, focus: Option<&Regex>, ignore: Option<&Regex>) -> Vec<bool> {
        let matches = |re: Option<&Regex>| -> Option<Vec<bool>> {
            re.map(|re| {
                // Each file once, however many functions name it.
                let files: Vec<bool> = self
                    .files
                    .iter()
                    .map(|f| !f.is_empty() && re.is_match(f))
                    .collect();
                self.functions
                    .iter()
                    .map(|f| re.is_match(&f.name) || files[f.file as usize])
                    .collect()
            })
        };
        let (focus, ignore) = (matches(focus), matches(ignore));
        let any = |set: &[bool], s: &Stack| s.frames.iter().any(|(f, _)| set[*f as usize]);
        self.samples
            .iter()
            .map(|s| {
                focus.as_deref().is_none_or(|set| any(set, s))
                    && !ignore.as_deref().is_some_and(|set| any(set, s))
            })
            .collect()
    }
}

/// Refuse a profile whose samples would hold more frames than a page
/// draws, one sample deeper than [`MAX_DEPTH`] or all of them more than
/// [`MAX_FRAMES`]: counted from the locations' sizes, before anything is
/// copied.
fn check_sizes(
    samples: &[protos::Sample],
    locations: &HashMap<u64, Vec<(u32, i64)>>,
) -> Result<(), Error> {
    let mut total = 0u64;
    for s in samples {
        let depth = s
            .location_id
            .iter()
            .map(|id| locations.get(id).map_or(0, |frames| frames.len() as u64))
            .fold(0u64, u64::saturating_add);
        if depth > MAX_DEPTH as u64 {
            return Err(invalid(format!(
                "one sample is {depth} frames deep, more than the {MAX_DEPTH} a page draws"
            )));
        }
        total = total.saturating_add(depth);
    }
    if total > MAX_FRAMES as u64 {
        return Err(invalid(format!(
            "its samples hold {total} frames in all, more than the {MAX_FRAMES} a page draws"
        )));
    }
    Ok(())
}

/// [`Stacks::type_index`] over a list of types.
pub(super) fn type_index(
    types: &[(String, String)],
    default: Option<&str>,
    asked: Option<&str>,
) -> Result<usize, Error> {
    let position = |name: &str| types.iter().position(|(t, _)| t == name);
    match asked.map(str::trim).filter(|a| !a.is_empty()) {
        None => Ok(default
            .and_then(position)
            .unwrap_or(types.len().saturating_sub(1))),
        Some(asked) => position(asked)
            .or_else(|| asked.parse::<usize>().ok().filter(|i| *i < types.len()))
            .ok_or_else(|| Error::NoSuchSampleType {
                asked: asked.to_owned(),
                known: types
                    .iter()
                    .map(|(t, _)| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A profile.proto with the given stacks (names leaf first) and values.
    pub(crate) fn proto(types: &[&str], stacks: &[(&[&str], &[i64])]) -> protos::Profile {
        let mut p = protos::Profile {
            string_table: vec![String::new()],
            ..Default::default()
        };
        let string = |p: &mut protos::Profile, s: &str| {
            if let Some(i) = p.string_table.iter().position(|t| t == s) {
                return i as i64;
            }
            p.string_table.push(s.to_owned());
            p.string_table.len() as i64 - 1
        };
        for t in types {
            let ty = string(&mut p, t);
            let unit = string(&mut p, "count");
            p.sample_type.push(protos::ValueType { ty, unit });
        }
        for (names, values) in stacks {
            let mut location_id = Vec::new();
            for name in *names {
                let name_id = string(&mut p, name);
                let file = string(&mut p, "src/zoo.rs");
                let id = p.function.len() as u64 + 1;
                p.function.push(protos::Function {
                    id,
                    name: name_id,
                    system_name: name_id,
                    filename: file,
                    start_line: 0,
                });
                p.location.push(protos::Location {
                    id,
                    line: vec![protos::Line {
                        function_id: id,
                        line: 7,
                    }],
                    ..Default::default()
                });
                location_id.push(id);
            }
            p.sample.push(protos::Sample {
                location_id,
                value: values.to_vec(),
                label: vec![],
            });
        }
        p
    }

    #[test]
    fn stacks_are_root_first_and_functions_merge_by_name() {
        let p = proto(
            &["samples", "cpu"],
            &[
                (&["eat", "live", "main"], &[1, 10]),
                (&["nap", "main"], &[2, 20]),
            ],
        );
        let s = Stacks::from_proto(&p).expect("resolves");
        let names = |i: usize| -> Vec<&str> {
            s.samples[i]
                .frames
                .iter()
                .map(|(f, _)| s.functions[*f as usize].name.as_str())
                .collect()
        };
        assert_eq!(names(0), ["main", "live", "eat"]);
        assert_eq!(names(1), ["main", "nap"]);
        assert_eq!(s.functions.len(), 4);
        assert_eq!(s.type_index(None), Ok(1));
        assert_eq!(s.type_index(Some("samples")), Ok(0));
        assert_eq!(s.type_index(Some("0")), Ok(0));
        assert_eq!(
            s.type_index(Some("inuse_space")),
            Err(Error::NoSuchSampleType {
                asked: "inuse_space".into(),
                known: "samples, cpu".into()
            })
        );
    }

    #[test]
    fn focus_and_ignore_keep_what_pprof_keeps() {
        let p = proto(
            &["cpu"],
            &[(&["eat", "main"], &[1]), (&["nap", "main"], &[2])],
        );
        let s = Stacks::from_proto(&p).expect("resolves");
        let re = |r: &str| Regex::new(r).expect("regex");
        assert_eq!(s.keep(Some(&re("^eat$")), None), [true, false]);
        assert_eq!(s.keep(None, Some(&re("nap"))), [true, false]);
        assert_eq!(s.keep(Some(&re("main")), Some(&re("eat"))), [false, true]);
        assert_eq!(s.keep(Some(&re("zoo\\.rs")), None), [true, true]);
    }

    /// A profile of one location with `lines` lines, named `repeats` times
    /// by each of `samples` samples.
    fn repeated(lines: usize, repeats: usize, samples: usize) -> protos::Profile {
        let mut p = proto(&["cpu"], &[(&["eat"], &[1])]);
        p.location[0].line = vec![p.location[0].line[0].clone(); lines];
        p.sample = vec![
            protos::Sample {
                location_id: vec![1; repeats],
                value: vec![1],
                label: vec![],
            };
            samples
        ];
        p
    }

    fn refused(p: &protos::Profile) -> String {
        match Stacks::from_proto(p) {
            Err(Error::InvalidUpload(why)) => why,
            other => panic!("accepted: {:?}", other.map(|s| s.samples.len())),
        }
    }

    #[test]
    fn frames_are_counted_before_they_are_copied() {
        // Issue 20, point 1 in small: 10⁴ lines named 10⁴ times asks for
        // 10⁸ frames in one sample.
        let why = refused(&repeated(10_000, 10_000, 1));
        assert_eq!(
            why,
            "one sample is 100000000 frames deep, more than the 4096 a page draws"
        );
        // Point 2: one sample a million deep.
        let why = refused(&repeated(1, 1_000_000, 1));
        assert!(
            why.starts_with("one sample is 1000000 frames deep"),
            "{why}"
        );
        // At the depth bound, but more than the bound in all.
        let why = refused(&repeated(16, 256, MAX_FRAMES / MAX_DEPTH + 1));
        assert_eq!(
            why,
            format!(
                "its samples hold {} frames in all, more than the {MAX_FRAMES} a page draws",
                (MAX_FRAMES / MAX_DEPTH + 1) * MAX_DEPTH
            )
        );
        // At both bounds: read.
        let s =
            Stacks::from_proto(&repeated(16, 256, MAX_FRAMES / MAX_DEPTH)).expect("at the bounds");
        assert_eq!(s.samples[0].frames.len(), MAX_DEPTH);
    }

    #[test]
    fn sample_types_are_bounded_in_number_and_length() {
        let mut p = proto(&["cpu"], &[]);
        p.sample_type = vec![p.sample_type[0].clone(); MAX_SAMPLE_TYPES + 1];
        assert!(refused(&p).contains("65 sample types, more than the 64"));
        let mut p = proto(&["cpu"], &[]);
        p.string_table.push("x".repeat(MAX_TYPE_NAME + 1));
        p.sample_type[0].unit = p.string_table.len() as i64 - 1;
        assert!(refused(&p).contains("257 bytes long, more than the 256"));
    }

    #[test]
    fn functions_share_their_file_and_totals_saturate() {
        let p = proto(
            &["cpu"],
            &[
                (&["eat", "main"], &[i64::MAX]),
                (&["nap", "main"], &[i64::MAX]),
            ],
        );
        let s = Stacks::from_proto(&p).expect("resolves");
        assert_eq!(s.files, ["", "src/zoo.rs"]);
        assert_eq!(s.file(0), "src/zoo.rs");
        assert_eq!(s.total(0, &[true, true]), i64::MAX);
    }

    #[test]
    fn broken_references_are_errors_not_panics() {
        let mut p = proto(&["cpu"], &[(&["eat"], &[1])]);
        p.sample[0].location_id.push(99);
        assert!(
            matches!(Stacks::from_proto(&p), Err(Error::InvalidUpload(w)) if w.contains("location 99"))
        );
        let mut p = proto(&["cpu"], &[(&["eat"], &[1])]);
        p.sample[0].value.push(3);
        assert!(
            matches!(Stacks::from_proto(&p), Err(Error::InvalidUpload(w)) if w.contains("2 values"))
        );
        let mut p = proto(&["cpu"], &[(&["eat"], &[1])]);
        p.function[0].name = 1000;
        assert!(
            matches!(Stacks::from_proto(&p), Err(Error::InvalidUpload(w)) if w.contains("1000"))
        );
        let mut p = proto(&["cpu"], &[(&["eat"], &[1])]);
        p.sample_type.clear();
        p.sample[0].value.clear();
        assert!(Stacks::from_proto(&p).is_err());
    }
}
