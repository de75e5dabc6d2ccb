//! Symbol names as pprof should show them: Rust paths demangled without
//! their hash, and qualified paths rewritten so pprof's name shortener
//! (which cuts `<…>`) leaves the type visible.

/// A readable, pprof-safe name for a symbol: Rust names demangled without
/// their hash, and qualified paths (`<T as Trait>::f`, `<T>::f`) rewritten to
/// `T::f`, because pprof's shortener cuts whatever sits between `<` and `>`.
pub(crate) fn clean_name(symbol: &str) -> String {
    unqualify(&demangle(symbol))
}

/// The demangled Rust path without its hash; other symbols as they are.
pub(crate) fn demangle(symbol: &str) -> String {
    match rustc_demangle::try_demangle(symbol) {
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => symbol.to_owned(),
    }
}

/// Rewrite every qualified path `<Self as Trait>::x` or `<Self>::x` to
/// `Self::x`, recursively; generic arguments (`Vec<T>`, `f::<T>`) stay.
fn unqualify(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        // A qualified path starts an expression (not `Vec<` nor `f::<`) and
        // is followed by `::`.
        let starts_path =
            i == 0 || matches!(bytes[i - 1], b' ' | b'<' | b',' | b'(' | b'[' | b'&' | b'*');
        if bytes[i] == b'<'
            && starts_path
            && let Some(close) = matching_angle(name, i)
            && name[close + 1..].starts_with("::")
        {
            let inner = &name[i + 1..close];
            let self_type = split_top_level_as(inner).unwrap_or(inner);
            let self_type = self_type
                .trim_start_matches('&')
                .trim_start_matches("mut ")
                .trim_start_matches("dyn ");
            out.push_str(&unqualify(self_type));
            i = close + 1;
            continue;
        }
        let ch = name[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn matching_angle(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in s.bytes().enumerate().skip(open) {
        match b {
            b'<' => depth += 1,
            b'>' if i > 0 && s.as_bytes()[i - 1] == b'-' => {} // `->` in fn types
            b'>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The part before a top-level ` as ` in `Self as Trait`.
fn split_top_level_as(inner: &str) -> Option<&str> {
    let mut depth = 0i32;
    let bytes = inner.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {} // `->` in fn types
            b'>' | b')' | b']' => depth -= 1,
            b' ' if depth == 0 && inner[i..].starts_with(" as ") => return Some(&inner[..i]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_names_lose_hash_and_qualified_paths() {
        assert_eq!(
            clean_name("_ZN8practice5Tiger3eat17h0123456789abcdefE"),
            "practice::Tiger::eat"
        );
        assert_eq!(
            unqualify("<practice::Tiger as practice::Animal>::eat"),
            "practice::Tiger::eat"
        );
        assert_eq!(
            unqualify("<std::sync::Mutex<T>>::lock"),
            "std::sync::Mutex<T>::lock"
        );
        assert_eq!(
            unqualify("<&mut <a::B as c::D>::E as f::G>::h"),
            "a::B::E::h"
        );
        assert_eq!(
            unqualify("core::ptr::drop_in_place<alloc::vec::Vec<u8>>"),
            "core::ptr::drop_in_place<alloc::vec::Vec<u8>>"
        );
        assert_eq!(
            unqualify("<fn() -> u8 as core::ops::FnOnce<()>>::call_once"),
            "fn() -> u8::call_once"
        );
        assert_eq!(
            unqualify(
                "core::option::Option<&str>::map::<alloc::boxed::Box<str>, <alloc::boxed::Box<str>>::from>"
            ),
            "core::option::Option<&str>::map::<alloc::boxed::Box<str>, alloc::boxed::Box<str>::from>"
        );
        assert_eq!(clean_name("malloc"), "malloc");
    }
}
