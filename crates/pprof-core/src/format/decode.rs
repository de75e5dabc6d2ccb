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

/// Records (samples, locations, functions, strings, mappings) an uploaded
/// profile may hold in all. A real profile of 10,000 stacks has some
/// 100,000; each record costs some tens of bytes once decoded.
const MAX_RECORDS: usize = 2_000_000;

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
    let records = count_records(&raw)?;
    if records > MAX_RECORDS {
        return Err(Error::InvalidUpload(format!(
            "it holds {records} records, more than the {MAX_RECORDS} a page reads"
        )));
    }
    protos::Profile::decode(raw.as_slice())
        .map_err(|e| Error::InvalidUpload(format!("it is not a profile.proto ({e})")))
}

/// The number of top-level length-delimited records, checking the wire
/// format on the way (without decoding anything).
fn count_records(mut raw: &[u8]) -> Result<usize, Error> {
    let bad = |what: &str| Error::InvalidUpload(format!("it is not a profile.proto ({what})"));
    let mut records = 0usize;
    while !raw.is_empty() {
        let key = varint(&mut raw).ok_or_else(|| bad("a field key is cut off"))?;
        match key & 7 {
            0 => {
                varint(&mut raw).ok_or_else(|| bad("a number is cut off"))?;
            }
            1 => raw = raw.get(8..).ok_or_else(|| bad("a fixed64 is cut off"))?,
            2 => {
                let len = varint(&mut raw).ok_or_else(|| bad("a length is cut off"))?;
                let len = usize::try_from(len).map_err(|_| bad("a length is too large"))?;
                raw = raw.get(len..).ok_or_else(|| bad("a record is cut off"))?;
                records += 1;
            }
            5 => raw = raw.get(4..).ok_or_else(|| bad("a fixed32 is cut off"))?,
            _ => return Err(bad("an unknown wire type")),
        }
    }
    Ok(records)
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
