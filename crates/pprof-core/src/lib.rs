#![doc = include_str!("../README.md")]

mod config;
mod cpu;
mod encode;
mod error;
mod guard;
mod handler;
pub mod heap;
mod index;
mod profile;
mod request;
mod service;
mod symbolize;
mod text;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use config::Config;
pub use error::Error;
pub use guard::{PeerAddr, Switch};
pub use handler::{BoxError, Pprof, ResponseBody};
pub use service::{PprofLayer, PprofService};
