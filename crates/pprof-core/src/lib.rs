#![doc = include_str!("../README.md")]

mod config;
mod cpu;
mod encode;
mod error;
mod goroutine;
mod handler;
pub mod heap;
mod index;
mod profile;
mod request;
mod service;
mod symbolize;
mod tasks;
mod text;
mod threads;

pub use config::Config;
pub use error::Error;
pub use handler::{BoxError, Pprof, ResponseBody};
pub use service::{PprofLayer, PprofService};
