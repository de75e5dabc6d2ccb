//! Reading a profile.proto someone sent (a page's uploaded baseline or
//! saved profile): gunzipped within a limit, counted before it is decoded
//! so a small file cannot unfold into millions of records, then decoded.
//! Nothing here trusts the input; every failure is an [`Error`] that says
//! what was wrong.

use std::io::Read;

use super::profile_proto as protos;
use flate2::read::MultiGzDecoder;
use prost::Message;

use crate::error::Error;

/// Records an uploaded profile may hold in all, counted at every level:
/// samples and the labels inside them, locations and their lines,
/// functions, mappings, sample types, strings. A real profile of 10,000
/// stacks has some 100,000; each costs 16 to 100 bytes once decoded (an
/// empty label is two bytes on the wire and 32 decoded), so the bound
/// keeps the decoded records under about 100 MiB.
const MAX_RECORDS: usize = 1_000_000;

/// Numbers in the samples' packed lists (location ids and values, and
/// comments) an uploaded profile may hold: one byte on the wire, eight
/// decoded. Four million is 32 MiB decoded, and more than a page draws
/// (every location id is at least one frame).
const MAX_NUMBERS: usize = 4_000_000;

/// Decode a profile.proto, gzipped (as Go serves it) or not. `max_decoded`
/// bounds the gunzipped size.
pub(crate) fn decode(bytes: &[u8], max_decoded: usize) -> Result<protos::Profile, Error> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        let limit = u64::try_from(max_decoded)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        MultiGzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut raw)
            .map_err(|e| Error::InvalidUpload(format!("it is not valid gzip ({e})")))?;
        if raw.len() > max_decoded {
            return Err(Error::UploadTooLarge {
                limit: max_decoded,
                decompressed: true,
            });
        }
        raw
    } else if bytes.len() > max_decoded {
        return Err(Error::UploadTooLarge {
            limit: max_decoded,
            decompressed: true,
        });
    } else {
        bytes.to_vec()
    };
    if raw.is_empty() {
        return Err(Error::InvalidUpload("it is empty".to_owned()));
    }
    let mut counted = Counted::default();
    count(&raw, Part::Profile, &mut counted)?;
    if counted.records > MAX_RECORDS {
        return Err(Error::InvalidUpload(format!(
            "it holds {} records, more than the {MAX_RECORDS} a page reads",
            counted.records
        )));
    }
    if counted.numbers > MAX_NUMBERS {
        return Err(Error::InvalidUpload(format!(
            "it holds {} numbers in its samples' lists, more than the {MAX_NUMBERS} a page reads",
            counted.numbers
        )));
    }
    protos::Profile::decode(raw.as_slice())
        .map_err(|e| Error::InvalidUpload(format!("it is not a profile.proto ({e})")))
}

/// What a profile.proto holds, counted on the wire.
#[derive(Debug, Default)]
struct Counted {
    /// Length-delimited records at every level.
    records: usize,
    /// Entries of the repeated number fields.
    numbers: usize,
}

/// The messages of profile.proto whose records are counted inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Profile,
    Sample,
    Location,
    /// Labels, lines, functions, mappings, sample types: numbers only.
    Leaf,
}

impl Part {
    /// What the length-delimited `field` of this part holds: a message
    /// to count inside, or `None` for bytes (strings, unknown fields).
    fn nested(self, field: u64) -> Option<Part> {
        match (self, field) {
            (Self::Profile, 2) => Some(Self::Sample),
            (Self::Profile, 4) => Some(Self::Location),
            // Sample types, mappings, functions; labels; lines.
            (Self::Profile, 1 | 3 | 5) | (Self::Sample, 3) | (Self::Location, 4) => {
                Some(Self::Leaf)
            }
            _ => None,
        }
    }

    /// Whether `field` is a repeated number (packed, or one per key):
    /// a sample's location ids and values, the profile's comments.
    fn repeated_number(self, field: u64) -> bool {
        matches!((self, field), (Self::Sample, 1 | 2) | (Self::Profile, 13))
    }
}

/// Count the records and numbers of `raw`, a `part`, checking the wire
/// format on the way (without decoding anything).
fn count(mut raw: &[u8], part: Part, counted: &mut Counted) -> Result<(), Error> {
    let bad = |what: &str| Error::InvalidUpload(format!("it is not a profile.proto ({what})"));
    while !raw.is_empty() {
        let key = varint(&mut raw).ok_or_else(|| bad("a field key is cut off"))?;
        let field = key >> 3;
        match key & 7 {
            0 => {
                varint(&mut raw).ok_or_else(|| bad("a number is cut off"))?;
                counted.numbers += usize::from(part.repeated_number(field));
            }
            1 => raw = raw.get(8..).ok_or_else(|| bad("a fixed64 is cut off"))?,
            2 => {
                let len = varint(&mut raw).ok_or_else(|| bad("a length is cut off"))?;
                let len = usize::try_from(len).map_err(|_| bad("a length is too large"))?;
                let inner = raw.get(..len).ok_or_else(|| bad("a record is cut off"))?;
                raw = &raw[len..];
                if part.repeated_number(field) {
                    // Packed: one number per byte that ends a varint.
                    if inner.last().is_some_and(|b| b & 0x80 != 0) {
                        return Err(bad("a packed number is cut off"));
                    }
                    counted.numbers += inner.iter().filter(|b| **b & 0x80 == 0).count();
                    continue;
                }
                counted.records += 1;
                match part.nested(field) {
                    Some(inner_part @ (Part::Sample | Part::Location)) => {
                        count(inner, inner_part, counted)?;
                    }
                    Some(Part::Leaf | Part::Profile) | None => {}
                }
            }
            5 => raw = raw.get(4..).ok_or_else(|| bad("a fixed32 is cut off"))?,
            _ => return Err(bad("an unknown wire type")),
        }
    }
    Ok(())
}

/// One base-128 varint off the front of `raw`.
fn varint(raw: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in raw.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *raw = &raw[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(raw: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let _ = gz.write_all(raw);
        gz.finish().unwrap_or_default()
    }

    #[test]
    fn a_gzip_bomb_is_refused_by_its_decompressed_size() {
        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(
            decode(&bomb, 1 << 20),
            Err(Error::UploadTooLarge {
                limit: 1 << 20,
                decompressed: true
            })
        );
    }

    #[test]
    fn garbage_and_truncation_say_what_is_wrong() {
        for (input, says) in [
            (&b""[..], "empty"),
            (&[0x1f, 0x8b, 0x08, 0x00][..], "gzip"),
            (&[0x12, 0x05, 0x01][..], "cut off"),
            (&[0x0f][..], "wire type"),
        ] {
            match decode(input, 1 << 20) {
                Err(Error::InvalidUpload(why)) => assert!(why.contains(says), "{why}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn too_many_records_are_refused_before_decoding() {
        // Each empty sample is two bytes on the wire.
        let raw: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], MAX_RECORDS + 1)
            .flatten()
            .collect();
        match decode(&gzip(&raw), 64 << 20) {
            Err(Error::InvalidUpload(why)) => assert!(why.contains("records"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// `bytes` as field `field` of a message: key, length, bytes.
    fn record(field: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2];
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn records_inside_a_sample_count_toward_the_bound() {
        // One sample of empty labels: one top-level record, yet each label
        // is a record of its own once decoded.
        let labels: Vec<u8> = std::iter::repeat_n([0x1au8, 0x00], MAX_RECORDS)
            .flatten()
            .collect();
        let raw = record(2, &labels);
        match decode(&gzip(&raw), 64 << 20) {
            Err(Error::InvalidUpload(why)) => {
                assert!(why.contains("1000001 records, more than the"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // And lines inside a location.
        let lines: Vec<u8> = std::iter::repeat_n([0x22u8, 0x00], MAX_RECORDS)
            .flatten()
            .collect();
        let raw = record(4, &lines);
        assert!(
            matches!(decode(&gzip(&raw), 64 << 20), Err(Error::InvalidUpload(why)) if why.contains("records"))
        );
    }

    #[test]
    fn a_samples_packed_numbers_count_toward_their_bound() {
        let ids = vec![1u8; MAX_NUMBERS + 1];
        let raw = record(2, &record(1, &ids));
        match decode(&gzip(&raw), 64 << 20) {
            Err(Error::InvalidUpload(why)) => assert!(why.contains("4000001 numbers"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Within the bound it decodes, one location id per byte.
        let raw = record(2, &record(1, &[1, 2, 0x80, 0x01]));
        let profile = decode(&raw, 1 << 20).expect("decodes");
        assert_eq!(profile.sample[0].location_id, [1, 2, 128]);
        let cut = record(2, &record(1, &[1, 0x80]));
        assert!(
            matches!(decode(&cut, 1 << 20), Err(Error::InvalidUpload(why)) if why.contains("cut off"))
        );
    }

    #[test]
    fn a_real_profile_round_trips() {
        let profile = protos::Profile {
            string_table: vec![String::new(), "cpu".into()],
            ..Default::default()
        };
        let raw = profile.encode_to_vec();
        assert_eq!(decode(&gzip(&raw), 1 << 20), Ok(profile.clone()));
        assert_eq!(decode(&raw, 1 << 20), Ok(profile));
    }
}
