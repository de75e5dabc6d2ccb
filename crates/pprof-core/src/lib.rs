#![doc = include_str!("../README.md")]

mod config;
mod error;
mod format;
#[allow(
    unsafe_code,
    reason = "the jemalloc glue: every block carries a SAFETY note"
)]
mod jemalloc;
pub mod labels;
mod profiles;
mod serve;
#[allow(
    unsafe_code,
    reason = "the async-signal-safe machinery: every block carries a SAFETY note"
)]
mod signals;
mod symbols;
pub mod sync;

/// Heap and allocation profiles from jemalloc's own sampling profiler.
///
/// Turn it on in the binary with one line at the crate root:
///
/// ```no_run
/// pprof_core::jemalloc_heap_profiling!();
/// # fn main() {}
/// ```
///
/// That installs jemalloc as the global allocator ([`Jemalloc`](heap::Jemalloc)) and
/// exports jemalloc's `malloc_conf` with [`DEFAULT_MALLOC_CONF`](heap::DEFAULT_MALLOC_CONF)
/// (`prof:true,prof_active:true,lg_prof_sample:19,prof_accum:true`: one
/// sample per 512 KiB allocated, like Go's default `MemProfileRate`). Pass
/// your own options as a string literal to change them:
/// `pprof_core::jemalloc_heap_profiling!("prof:true,prof_active:true,lg_prof_sample:17,prof_accum:true");`.
/// The environment variable `_RJEM_MALLOC_CONF` overrides both at start-up.
pub mod heap {
    pub use crate::jemalloc::DEFAULT_MALLOC_CONF;
    #[cfg(feature = "tikv-jemallocator")]
    pub use crate::jemalloc::Jemalloc;
}

/// profile.proto's messages (Google's `perftools.profiles`, generated with
/// prost), as the routes serve them gzipped: for tools and tests that read
/// what pprof-core serves.
///
/// ```
/// use prost::Message;
///
/// let profile = pprof_core::proto::Profile {
///     string_table: vec![String::new()],
///     ..Default::default()
/// };
/// let bytes = profile.encode_to_vec();
/// assert_eq!(pprof_core::proto::Profile::decode(bytes.as_slice()).unwrap(), profile);
/// ```
pub mod proto {
    pub use crate::format::profile_proto::*;
}

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use serve::fuzzing;

pub use config::{Config, Switch};
pub use error::Error;
pub use serve::client::{ClientSocket, MountNotice};
pub use serve::guard::PeerAddr;
pub use serve::tower::{
    LabelRequestsLayer, LabelRequestsService, LabeledRequest, PprofLayer, PprofService,
    WatchPollsLayer, WatchPollsService, label_request,
};
pub use serve::{BoxError, Pprof, ResponseBody, StreamBody};
#[cfg(tokio_unstable)]
pub use sync::watch::watch_all_tasks;
pub use sync::watch::{
    DEFAULT_SLOW_POLL_THRESHOLD, WatchPolls, set_slow_poll_threshold, watch_polls,
};
