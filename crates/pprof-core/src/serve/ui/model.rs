//! A profile as the pages read it: the profile.proto a tool would get
//! (our own, or one uploaded), with names resolved and stacks root first;
//! which sample type a page shows; which samples `focus` and `ignore` keep.

use std::collections::HashMap;

use regex::Regex;

use crate::Error;
use crate::format::protos;

/// One function, as pprof groups frames: by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Function {
    pub(super) name: String,
    /// The source file of its first frame seen, empty when unknown.
    pub(super) file: String,
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
    pub(super) samples: Vec<Stack>,
    pub(super) duration_nanos: i64,
}

impl Stacks {
    /// Resolve a profile.proto, ours or anyone's: every id and string index
    /// is checked, and a profile that breaks the format's rules is an
    /// [`Error::InvalidUpload`] saying which.
    pub(super) fn from_proto(p: &protos::Profile) -> Result<Self, Error> {
        let strings = Strings(&p.string_table);
        let mut stacks = Stacks {
            duration_nanos: p.duration_nanos,
            ..Stacks::default()
        };
        for t in &p.sample_type {
            let (kind, unit) = (strings.get(t.ty)?, strings.get(t.unit)?);
            stacks.types.push((kind.to_owned(), unit.to_owned()));
        }
        if stacks.types.is_empty() {
            return Err(invalid("it has no sample types".to_owned()));
        }
        let default = strings.get(p.default_sample_type)?;
        stacks.default_type = (!default.is_empty()).then(|| default.to_owned());
        let function_ids = stacks.read_functions(&p.function, strings)?;
        let locations = stacks.read_locations(&p.location, &function_ids)?;
        stacks.read_samples(&p.sample, &locations)?;
        Ok(stacks)
    }

    /// Group the profile's functions by name; the map gives each proto
    /// function id its index in `functions`.
    fn read_functions(
        &mut self,
        functions: &[protos::Function],
        strings: Strings<'_>,
    ) -> Result<HashMap<u64, u32>, Error> {
        let mut by_name: HashMap<&str, u32> = HashMap::new();
        let mut function_ids = HashMap::new();
        for f in functions {
            let name = strings.get(f.name)?;
            let name = if name.is_empty() { "?" } else { name };
            let index = match by_name.get(name) {
                Some(index) => *index,
                None => {
                    let index = self.add_function(name.to_owned())?;
                    by_name.insert(name, index);
                    index
                }
            };
            if let Some(function) = self.functions.get_mut(index as usize)
                && function.file.is_empty()
            {
                strings.get(f.filename)?.clone_into(&mut function.file);
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
                frames.push((self.add_function(format!("{:#x}", l.address))?, 0));
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

    /// A new function of this name, its file not yet known.
    fn add_function(&mut self, name: String) -> Result<u32, Error> {
        let index = u32::try_from(self.functions.len())
            .map_err(|_| invalid("it has too many functions".to_owned()))?;
        self.functions.push(Function {
            name,
            file: String::new(),
        });
        Ok(index)
    }

    /// The sum of the kept samples' value `index`.
    pub(super) fn total(&self, index: usize, keep: &[bool]) -> i64 {
        self.samples
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.values.get(index).copied().unwrap_or(0))
            .sum()
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
                self.functions
                    .iter()
                    .map(|f| re.is_match(&f.name) || (!f.file.is_empty() && re.is_match(&f.file)))
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
