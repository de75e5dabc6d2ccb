//! The one in-memory profile every collector produces ([`StackProfile`]:
//! samples of raw stacks with values and labels), the one encoder to
//! gzipped profile.proto, Go's text writers, and the frame rules: which
//! leaf frames are allocator, lock, wait or thread-start machinery, in one
//! place.

#[cfg(feature = "ui")]
mod decode;
mod frames;
mod profile;
mod proto;
mod text;

#[cfg(feature = "ui")]
pub(crate) use decode::decode;
pub(crate) use frames::is_thread_start;
#[cfg(test)]
pub(crate) use frames::symbolize;
#[cfg(feature = "ui")]
pub(crate) use pprof::protos;
pub(crate) use profile::{Label, LeafTrim, Sample, StackProfile, ValueType, vt};
pub(crate) use proto::{gzip_proto, to_proto};
pub(crate) use text::{cap, contention, counts, heap, thread_dump};
