//! The HTML index at the prefix, shaped like Go's: a row per profile of
//! the registry (and `cmdline`), with its count and description.

use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::respond::{Nonce, Reply};
use crate::Error;
use crate::profiles::{PROFILES, blocking};

/// One row of the index table.
struct Entry {
    name: &'static str,
    count: usize,
    description: &'static str,
    links: &'static [(&'static str, &'static str)],
    /// Whether it has pages for people (`ui/`): every profile does.
    #[cfg_attr(not(feature = "ui"), allow(dead_code))]
    pages: bool,
}

/// How long the index's counts are served before they are read again.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The counts of the last read, and when it was.
static COUNTS: Mutex<Option<(Instant, Arc<[usize]>)>> = Mutex::new(None);

/// Held by the one request reading the counts again; the others wait for
/// it (as tasks, not threads) and share what it read.
static READING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every profile's count, in [`PROFILES`]' order: read on a blocking thread
/// (the heap's takes a bare dump) at most once every [`FRESH_FOR`], by one
/// request while the others wait for its answer.
async fn counts() -> Result<Arc<[usize]>, Error> {
    let fresh = || {
        COUNTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, counts)| counts.clone())
    };
    if let Some(counts) = fresh() {
        return Ok(counts);
    }
    let _reading = READING.lock().await;
    if let Some(counts) = fresh() {
        return Ok(counts);
    }
    let counts: Arc<[usize]> =
        blocking(|| Ok(PROFILES.iter().map(|p| p.count()).collect::<Vec<_>>()))
            .await?
            .into();
    READS.fetch_add(1, Ordering::Relaxed);
    *COUNTS.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), counts.clone()));
    Ok(counts)
}

/// How many times the counts were read (tests).
static READS: AtomicUsize = AtomicUsize::new(0);

/// The index page, with the adapter's `notice` about the mount, if any.
pub(super) async fn page(prefix: &str, notice: Option<&str>) -> Result<Reply, Error> {
    let counts = counts().await?;
    let mut entries = vec![Entry {
        name: "cmdline",
        count: 0,
        description: "The command line invocation of the current program",
        links: &[],
        pages: false,
    }];
    entries.extend(PROFILES.iter().zip(counts.iter()).map(|(p, &count)| Entry {
        name: p.name(),
        count,
        description: p.about().description,
        links: p.about().index_links,
        pages: true,
    }));
    let nonce = Nonce::fresh();
    Ok(Reply::Html {
        html: html(prefix, notice, entries, &nonce),
        nonce,
    })
}

/// Rows sorted by name; links are relative so the page works under any
/// mount; its one style carries the response's nonce.
fn html(prefix: &str, notice: Option<&str>, mut entries: Vec<Entry>, nonce: &Nonce) -> String {
    entries.sort_by_key(|e| e.name);
    let title = escape(&format!("{prefix}/"));
    let mut out = String::new();
    let _ = write!(
        out,
        "<html>\n<head>\n<title>{title}</title>\n<style nonce=\"{}\">\n.profile-name{{\n\tdisplay:inline-block;\n\twidth:6rem;\n}}\n</style>\n</head>\n<body>\n{title}\n<br>\n",
        nonce.as_str()
    );
    if let Some(notice) = notice {
        let _ = writeln!(out, "<p class=notice><b>Note:</b> {}</p>", escape(notice));
    }
    out.push_str("<p>Set debug=1 as a query parameter to export in legacy text format</p>\n<br>\nTypes of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n");
    for e in &entries {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><a href='{}?debug=1'>{}</a></td>{}</tr>",
            e.count,
            e.name,
            e.name,
            pages(e)
        );
    }
    out.push_str("</table>\n");
    for (href, text) in entries.iter().flat_map(|e| e.links) {
        let _ = writeln!(out, "<a href='{}'>{}</a>\n<br>", escape(href), escape(text));
    }
    out.push_str("<p>\nProfile Descriptions:\n<ul>\n");
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

/// The row's links to its pages for people, when built with them.
fn pages(entry: &Entry) -> String {
    #[cfg(feature = "ui")]
    if entry.pages {
        return super::ui::index_links(entry.name);
    }
    let _ = entry;
    String::new()
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_index_requests_reads_the_counts_once() {
        // After a first read, 64 requests at once within the second: none
        // reads again (each did, on a blocking thread of its own, before).
        let _ = page("/debug/pprof", None).await.expect("index");
        let before = READS.load(Ordering::Relaxed);
        let pages: Vec<_> = (0..64)
            .map(|_| tokio::spawn(async { page("/debug/pprof", None).await.map(|_| ()) }))
            .collect();
        for page in pages {
            page.await.expect("task").expect("index");
        }
        let reads = READS.load(Ordering::Relaxed) - before;
        assert!(reads <= 1, "{reads} reads for 64 requests");
    }

    #[test]
    fn rows_are_sorted_with_relative_links() {
        let page = html(
            "/debug/pprof",
            Some("mounted <wrong>"),
            vec![
                Entry {
                    name: "zeta",
                    count: 0,
                    description: "Z",
                    links: &[("zeta?debug=2", "all of zeta")],
                    pages: false,
                },
                Entry {
                    name: "alpha",
                    count: 3,
                    description: "a<b",
                    links: &[],
                    pages: false,
                },
            ],
            &Nonce::fresh(),
        );
        assert!(page.contains("<title>/debug/pprof/</title>"));
        let alpha = page.find("href='alpha?debug=1'").unwrap_or(usize::MAX);
        let zeta = page.find("href='zeta?debug=1'").unwrap_or(0);
        assert!(alpha < zeta);
        assert!(page.contains("<a href='zeta?debug=2'>all of zeta</a>"));
        assert!(page.contains("<td>3</td>"));
        assert!(page.contains("a&lt;b"));
        assert!(page.contains("<p class=notice><b>Note:</b> mounted &lt;wrong&gt;</p>"));
    }
}
