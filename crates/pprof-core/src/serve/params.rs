//! A request's query parameters, read and checked one at a time, and a
//! profile named by a request: what the data routes and the pages share.

use std::fmt;
use std::time::Duration;

use crate::profiles::Profile;
use crate::{Config, Error};

/// A registered profile, compared and printed by its name.
#[derive(Clone, Copy)]
pub(crate) struct Named(pub(crate) &'static dyn Profile);

impl PartialEq for Named {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}

impl Eq for Named {}

impl fmt::Debug for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// Query parameters, first value wins (as Go's `FormValue`).
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn new(form: &str, query: &str) -> Self {
        Self(
            form_urlencoded::parse(form.as_bytes())
                .chain(form_urlencoded::parse(query.as_bytes()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn seconds(&self, max: Duration) -> Result<Option<Duration>, Error> {
        let Some(raw) = self.get("seconds") else {
            return Ok(None);
        };
        let seconds: u64 = raw.trim().parse().map_err(|_| {
            // A number too large for u64 is still a number: say it is too long.
            if !raw.trim().is_empty() && raw.trim().bytes().all(|b| b.is_ascii_digit()) {
                Error::SecondsTooLong {
                    limit: max.as_secs(),
                }
            } else {
                Error::InvalidSeconds
            }
        })?;
        if seconds == 0 {
            return Err(Error::InvalidSeconds);
        }
        let duration = Duration::from_secs(seconds);
        if duration > max {
            return Err(Error::SecondsTooLong {
                limit: max.as_secs(),
            });
        }
        Ok(Some(duration))
    }

    pub(super) fn debug(&self) -> Result<u32, Error> {
        match self.get("debug").map(str::trim) {
            None | Some("") => Ok(0),
            Some(raw) => raw.parse().map_err(|_| Error::InvalidDebug),
        }
    }

    pub(super) fn hz(&self, config: &Config) -> Result<u32, Error> {
        let (min, max) = (config.min_hz, config.max_hz);
        match self.get("hz").map(str::trim) {
            None | Some("") => Ok(config.default_hz.clamp(min, max)),
            Some(raw) => match raw.parse::<u32>() {
                Ok(hz) if (min..=max).contains(&hz) => Ok(hz),
                _ => Err(Error::InvalidHz { min, max }),
            },
        }
    }
}
