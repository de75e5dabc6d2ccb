#![doc = include_str!("../README.md")]

mod config;
mod contention;
mod cpu;
mod encode;
mod error;
mod goroutine;
mod guard;
mod handler;
pub mod heap;
mod index;
mod profile;
mod request;
mod service;
mod symbolize;
pub mod sync;
mod tasks;
mod text;
mod threads;
mod watch;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use config::Config;
pub use error::Error;
pub use guard::{PeerAddr, Switch};
pub use handler::{BoxError, Pprof, ResponseBody};
pub use service::{PprofLayer, PprofService};
pub use watch::{
    DEFAULT_SLOW_POLL_THRESHOLD, WatchPolls, WatchPollsLayer, WatchPollsService,
    set_poll_watch_signal, set_slow_poll_threshold, watch_polls,
};
