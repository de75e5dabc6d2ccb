//! Go's two helper routes: `/cmdline` and the `/symbol` protocol, and
//! reading a request body within its limit.

use http::Method;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::BoxError;
use super::respond::Reply;
use crate::profiles::{Cancel, Slot};
use crate::{Config, Error};

/// Process arguments joined by NUL bytes, as Go's `/cmdline`.
pub(super) fn cmdline() -> String {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\0")
}

/// Lookups running at once in the process; one more is refused (409).
const LOOKUPS_AT_ONCE: usize = 2;

static LOOKUPS: Slot = Slot::limited(
    LOOKUPS_AT_ONCE,
    Error::SymbolLookupsBusy {
        limit: LOOKUPS_AT_ONCE,
    },
);

/// One of the lookup places, held (tests).
#[cfg(test)]
pub(super) fn hold_lookup() -> crate::profiles::Permit {
    LOOKUPS.try_claim().expect("a lookup place is free")
}

/// Go's symbol protocol: addresses joined by `+`, in the query (GET) or the
/// body (POST); answer the ones that resolve. At most `max_addresses` per
/// request (400 beyond) and [`LOOKUPS_AT_ONCE`] lookups at a time (409).
pub(super) async fn answer<B>(
    method: &Method,
    query: Option<&str>,
    body: Option<B>,
    config: &Config,
) -> Result<Reply, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let max_body = config.max_body_bytes;
    let input = if method == Method::POST {
        read_body(body, max_body).await?
    } else {
        let query = query.unwrap_or_default();
        if query.len() > max_body {
            return Err(Error::BodyTooLarge { limit: max_body });
        }
        query.to_owned()
    };
    let addresses = parse_addresses(&input);
    if addresses.len() > config.max_symbol_addresses {
        return Err(Error::TooManyAddresses {
            limit: config.max_symbol_addresses,
        });
    }
    let looking_up = LOOKUPS.try_claim()?;
    let cancel = Cancel::default();
    let _cancel_when_gone = cancel.on_drop();
    crate::profiles::blocking(move || {
        let _looking_up = looking_up;
        cancel.check()?;
        let resolved = crate::symbols::symbolizer().resolve_all(addresses.iter().copied());
        let mut out = String::from("num_symbols: 1\n");
        for address in addresses {
            if let Some(frame) = resolved.get(&address).and_then(|f| f.first()) {
                out.push_str(&format!("{address:#x} {}\n", frame.name));
            }
        }
        Ok(Reply::Text(out))
    })
    .await
}

/// The whole request body as text, at most `max` bytes.
pub(super) async fn read_body<B>(body: Option<B>, max: usize) -> Result<String, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let bytes = read_bytes(body, max).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The whole request body, at most `max` bytes.
pub(super) async fn read_bytes<B>(body: Option<B>, max: usize) -> Result<bytes::Bytes, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let Some(body) = body else {
        return Ok(bytes::Bytes::new());
    };
    // A declared length over the limit is refused before a byte is read.
    if !usize::try_from(body.size_hint().lower()).is_ok_and(|declared| declared <= max) {
        return Err(Error::BodyTooLarge { limit: max });
    }
    let collected = Limited::new(body, max).collect().await.map_err(|e| {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            Error::BodyTooLarge { limit: max }
        } else {
            Error::BadBody
        }
    })?;
    Ok(collected.to_bytes())
}

/// The addresses of a `/symbol` request: tokens split on `+`, junk and zero skipped.
pub(crate) fn parse_addresses(input: &str) -> Vec<u64> {
    input.split('+').filter_map(parse_address).collect()
}

/// An unsigned integer as Go's `strconv.ParseUint(s, 0, 64)` reads it; zero
/// and junk are skipped.
fn parse_address(token: &str) -> Option<u64> {
    let t = token.trim();
    let value = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse().ok()
    }?;
    (value != 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_go() {
        assert_eq!(parse_address("0x10"), Some(16));
        assert_eq!(parse_address("010"), Some(8));
        assert_eq!(parse_address("10"), Some(10));
        assert_eq!(parse_address("0"), None);
        assert_eq!(parse_address("zz"), None);
        assert_eq!(parse_address("0x"), None);
        assert_eq!(parse_address("99999999999999999999999"), None);
        assert_eq!(parse_addresses("0x10+junk+0+8"), vec![16, 8]);
    }
}
