//! The one builder from a [`StackProfile`] to gzipped `profile.proto`, used
//! by every profile type.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use super::merge::records;
use super::profile::{Label, StackProfile, ValueType};
use super::profile_proto as protos;
use crate::symbols::{Frame, Mapping, mappings};

/// A function's identity: name, system name, file.
type FunctionKey = (Arc<str>, Arc<str>, Arc<str>);

/// Interning tables of one profile under construction.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<protos::Function>,
    function_ids: HashMap<FunctionKey, u64>,
    locations: Vec<protos::Location>,
    location_ids: HashMap<(u64, usize), u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(id) = self.string_ids.get(s) {
            return *id;
        }
        let id = i64::try_from(self.strings.len()).unwrap_or(i64::MAX);
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn value_type(&mut self, vt: ValueType) -> protos::ValueType {
        protos::ValueType {
            ty: self.string(vt.kind),
            unit: self.string(vt.unit),
        }
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let key = (
            frame.name.clone(),
            frame.system_name.clone(),
            frame.file.clone(),
        );
        if let Some(id) = self.function_ids.get(&key) {
            return *id;
        }
        let id = self.functions.len() as u64 + 1;
        let function = protos::Function {
            id,
            name: self.string(&frame.name),
            system_name: self.string(&frame.system_name),
            filename: self.string(&frame.file),
            start_line: 0,
        };
        self.functions.push(function);
        self.function_ids.insert(key, id);
        id
    }

    fn location(&mut self, pc: u64, frames: &[Frame], mappings: &[Mapping]) -> u64 {
        // A partly trimmed leaf is a different location from the whole one.
        let key = (pc, frames.len());
        if let Some(id) = self.location_ids.get(&key) {
            return *id;
        }
        let id = self.locations.len() as u64 + 1;
        let line = frames
            .iter()
            .map(|f| protos::Line {
                function_id: self.function(f),
                line: i64::from(f.line),
            })
            .collect();
        let mapping_id = mappings
            .iter()
            .position(|m| (m.start..m.limit).contains(&pc))
            .map_or(0, |i| i as u64 + 1);
        self.locations.push(protos::Location {
            id,
            mapping_id,
            address: pc,
            line,
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }
}

/// The profile as a `profile.proto` message, symbolized in process, one
/// sample per stack and label set (see [`records`]).
pub(crate) fn to_proto(profile: &StackProfile) -> protos::Profile {
    let records = records(profile);
    let maps = mappings();
    let mut b = Builder::default();
    b.string("");
    let sample_type = profile
        .sample_types
        .iter()
        .map(|vt| b.value_type(*vt))
        .collect();
    let period_type = Some(b.value_type(profile.period_type));
    let mut samples = Vec::with_capacity(records.len());
    for record in records {
        let location_id = record
            .stack
            .stack
            .iter()
            .map(|(pc, frames)| b.location(*pc, frames, &maps))
            .collect();
        let label = record
            .sample
            .labels
            .iter()
            .map(|l| match l {
                Label::Str(key, value) => protos::Label {
                    key: b.string(key),
                    str: b.string(value),
                    ..Default::default()
                },
                Label::Num(key, value) => protos::Label {
                    key: b.string(key),
                    num: *value,
                    ..Default::default()
                },
                Label::User(key, value) => protos::Label {
                    key: b.string(key),
                    str: b.string(value),
                    ..Default::default()
                },
            })
            .collect();
        samples.push(protos::Sample {
            location_id,
            value: record.values,
            label,
        });
    }
    let mapping = maps
        .iter()
        .enumerate()
        .map(|(i, m)| protos::Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename: b.string(&m.path),
            build_id: b.string(&m.build_id),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        })
        .collect();
    let default_sample_type = profile.default_sample_type.map_or(0, |t| b.string(t));
    let comment = profile.comments.iter().map(|c| b.string(c)).collect();
    protos::Profile {
        sample_type,
        sample: samples,
        mapping,
        location: std::mem::take(&mut b.locations),
        function: std::mem::take(&mut b.functions),
        string_table: std::mem::take(&mut b.strings),
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: profile.time_nanos(),
        duration_nanos: profile.duration_nanos(),
        period_type,
        period: profile.period,
        comment,
        default_sample_type,
    }
}

/// Encode and gzip, as Go serves profiles (no `Content-Encoding`).
pub(crate) fn gzip_proto(profile: &protos::Profile) -> Vec<u8> {
    let raw = profile.encode_to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::format::{LeafTrim, Sample, vt};

    #[test]
    fn proto_has_go_invariants() {
        const TYPES: &[ValueType] = &[vt("samples", "count"), vt("cpu", "nanoseconds")];
        let profile = StackProfile {
            sample_types: TYPES,
            period_type: vt("cpu", "nanoseconds"),
            period: 10_000_000,
            default_sample_type: None,
            time: UNIX_EPOCH + Duration::from_secs(1),
            duration: Duration::from_secs(2),
            samples: vec![Sample {
                pcs: vec![proto_has_go_invariants as fn() as usize as u64],
                values: vec![1, 10_000_000],
                labels: vec![Label::Str("thread", "main".into())],
            }],
            leaf_trim: LeafTrim::None,
            comments: Vec::new(),
        };
        let p = to_proto(&profile);
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.string_table[p.sample_type[1].ty as usize], "cpu");
        assert_eq!(p.duration_nanos, 2_000_000_000);
        assert!(p.mapping[0].has_functions && p.mapping[0].has_line_numbers);
        assert!(p.location.iter().all(|l| l.id != 0));
        assert_eq!(p.sample[0].value.len(), p.sample_type.len());
        let gz = gzip_proto(&p);
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    }
}
