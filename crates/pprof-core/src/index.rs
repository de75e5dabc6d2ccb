//! The HTML index at the prefix, shaped like Go's.

use std::fmt::Write;

/// One row of the index table.
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) count: usize,
    pub(crate) description: &'static str,
}

/// Rows sorted by name; links are relative so the page works under any mount.
pub(crate) fn page(prefix: &str, mut entries: Vec<Entry>) -> String {
    entries.sort_by_key(|e| e.name);
    let title = escape(&format!("{prefix}/"));
    let mut out = String::new();
    let _ = write!(
        out,
        "<html>\n<head>\n<title>{title}</title>\n<style>\n.profile-name{{\n\tdisplay:inline-block;\n\twidth:6rem;\n}}\n</style>\n</head>\n<body>\n{title}\n<br>\n<p>Set debug=1 as a query parameter to export in legacy text format</p>\n<br>\nTypes of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n"
    );
    for e in &entries {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><a href='{}?debug=1'>{}</a></td></tr>",
            e.count, e.name, e.name
        );
    }
    out.push_str("</table>\n<a href='goroutine?debug=2'>full goroutine stack dump</a>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n");
    for e in &entries {
        let _ = writeln!(
            out,
            "<li><div class=profile-name>{}: </div> {}</li>",
            e.name,
            escape(e.description)
        );
    }
    out.push_str("</ul>\n</p>\n</body>\n</html>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
        .replace('"', "&#34;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sorted_with_relative_links() {
        let page = page(
            "/debug/pprof",
            vec![
                Entry {
                    name: "profile",
                    count: 0,
                    description: "CPU",
                },
                Entry {
                    name: "allocs",
                    count: 3,
                    description: "a<b",
                },
            ],
        );
        assert!(page.contains("<title>/debug/pprof/</title>"));
        let allocs = page.find("href='allocs?debug=1'").unwrap_or(usize::MAX);
        let profile = page.find("href='profile?debug=1'").unwrap_or(0);
        assert!(allocs < profile);
        assert!(page.contains("<td>3</td>"));
        assert!(page.contains("a&lt;b"));
    }
}
