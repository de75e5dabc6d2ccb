//! The pages' HTML: one shell (navigation, the controls form), the
//! flame graph, top and diff bodies, the "working" and "choose" pages and
//! the error page. Every name, label and parameter is escaped here; the
//! scripts and styles are inline, so a page is one response and fetches
//! nothing, and each carries the response's nonce (its
//! `Content-Security-Policy` runs no other script or style).

use std::borrow::Cow;
use std::fmt::Write;

use super::top::Top;
use super::{Page, PageRequest};

/// `s` safe in HTML text and in quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The longest name or file a page shows, in bytes: longer ones (a C++
/// template, or a hostile upload's megabyte of text) are shortened, so
/// what a page writes per frame or row stays small.
const MAX_SHOWN: usize = 1024;

/// `s` as a page shows it: at most [`MAX_SHOWN`] bytes (cut at a
/// character) and an ellipsis.
pub(super) fn shown(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_SHOWN {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// A value in its unit, as people read it: `11.6 MiB`, `3.33 s`, `1,234`.
pub(super) fn value(v: i64, unit: &str) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs() as f64;
    let scaled = |steps: &[(f64, &str)]| {
        let (size, name) = steps
            .iter()
            .rev()
            .find(|(size, _)| a >= *size)
            .copied()
            .unwrap_or(steps[0]);
        let n = a / size;
        let digits = if n >= 100.0 || n.fract() == 0.0 { 0 } else { 2 };
        format!("{sign}{n:.digits$} {name}")
    };
    match unit {
        "bytes" => scaled(&[
            (1.0, "B"),
            (1024.0, "KiB"),
            (1048576.0, "MiB"),
            (1073741824.0, "GiB"),
        ]),
        "nanoseconds" => scaled(&[(1.0, "ns"), (1e3, "µs"), (1e6, "ms"), (1e9, "s")]),
        _ => {
            let digits = v.unsigned_abs().to_string();
            let mut grouped = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            format!("{sign}{grouped}")
        }
    }
}

/// `part` as a percentage of `total`.
pub(super) fn percent(part: i64, total: i64) -> String {
    if total == 0 {
        return "–".to_owned();
    }
    format!("{:.2}%", 100.0 * part as f64 / total as f64)
}

/// A page's own address with other parameters (relative, so it works under
/// any mount).
pub(super) fn href(page: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        if !v.is_empty() {
            query.append_pair(k, v);
        }
    }
    escape(&format!("{page}?{}", query.finish()))
}

/// What the shell around a page's body needs to know.
pub(super) struct Shell<'a> {
    pub(super) asked: &'a PageRequest,
    /// The page's heading.
    pub(super) heading: String,
    /// The sample types to offer and the one shown, when known.
    pub(super) types: &'a [(String, String)],
    pub(super) shown: Option<usize>,
    /// The response's nonce, on every script and style.
    pub(super) nonce: &'a str,
}

impl Shell<'_> {
    /// The parameters that carry over from page to page.
    fn params(&self) -> Vec<(&'static str, String)> {
        let a = self.asked;
        let seconds = a
            .seconds
            .map(|s| s.as_secs().to_string())
            .unwrap_or_default();
        vec![
            ("profile", a.profile.0.name().to_owned()),
            ("sample_index", a.sample_index.clone().unwrap_or_default()),
            ("seconds", seconds),
            (
                "focus",
                a.focus
                    .as_ref()
                    .map(|p| p.0.to_string())
                    .unwrap_or_default(),
            ),
            (
                "ignore",
                a.ignore
                    .as_ref()
                    .map(|p| p.0.to_string())
                    .unwrap_or_default(),
            ),
        ]
    }

    /// Link to `page` with this page's parameters, `changes` applied.
    pub(super) fn link(&self, page: Page, changes: &[(&str, &str)]) -> String {
        let mut params = self.params();
        for (k, v) in changes {
            if let Some(p) = params.iter_mut().find(|(pk, _)| pk == k) {
                p.1 = (*v).to_owned();
            }
        }
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        href(page.path(), &pairs)
    }

    /// The whole page: head, navigation, controls, `body`, `script`.
    pub(super) fn page(&self, body: &str, script: &str) -> String {
        let a = self.asked;
        let name = a.profile.0.name();
        let mut out = String::with_capacity(body.len() + 8192);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n<title>{} · {}</title>\n<style nonce=\"{}\">{STYLE}</style>\n</head>\n<body>\n<header>\n<nav><a href='../'>index</a> › <b>{}</b>",
            escape(name),
            escape(a.page.title()),
            self.nonce,
            escape(name)
        );
        for page in [Page::Flamegraph, Page::Top, Page::Diff] {
            let class = if page == a.page { " class=here" } else { "" };
            let _ = write!(
                out,
                " · <a{class} href=\"{}\">{}</a>",
                self.link(page, &[]),
                page.title()
            );
        }
        out.push_str("</nav>\n");
        self.controls(&mut out);
        let _ = write!(
            out,
            "</header>\n<main>\n<h1>{}</h1>\n{body}\n</main>\n<script nonce=\"{}\">{script}</script>\n</body>\n</html>\n",
            escape(&self.heading),
            self.nonce
        );
        out
    }

    /// The form that reloads this page with another sample type, regexes
    /// or time window (`GET`, so every view has its own address).
    fn controls(&self, out: &mut String) {
        let a = self.asked;
        let _ = write!(
            out,
            "<form class=controls method=get action='{}'>\n<input type=hidden name=profile value=\"{}\">\n",
            a.page.path(),
            escape(a.profile.0.name())
        );
        if !self.types.is_empty() {
            out.push_str("<label>sample type <select name=sample_index>");
            for (i, (t, unit)) in self.types.iter().enumerate() {
                let selected = if Some(i) == self.shown {
                    " selected"
                } else {
                    ""
                };
                let _ = write!(
                    out,
                    "<option value=\"{}\"{selected}>{} ({})</option>",
                    escape(t),
                    escape(t),
                    escape(unit)
                );
            }
            out.push_str("</select></label>\n");
        }
        let pattern = |p: &Option<super::Pattern>| {
            p.as_ref().map(|p| escape(p.0.as_str())).unwrap_or_default()
        };
        let _ = write!(
            out,
            "<label>focus <input name=focus value=\"{}\" placeholder=regex size=14></label>\n<label>ignore <input name=ignore value=\"{}\" placeholder=regex size=14></label>\n",
            pattern(&a.focus),
            pattern(&a.ignore)
        );
        let (label, hint) = if a.windowed() {
            ("seconds", "how long to profile")
        } else if a.page == Page::Diff {
            ("seconds", "compare now with this many seconds ago")
        } else {
            (
                "delta over",
                "empty: since the start; N: what changed in N seconds",
            )
        };
        let _ = write!(
            out,
            "<label title=\"{hint}\">{label} <input name=seconds type=number min=1 size=4 value=\"{}\" placeholder=s></label>\n<button>Apply</button>\n</form>\n",
            a.seconds
                .map(|s| s.as_secs().to_string())
                .unwrap_or_default()
        );
    }
}

/// A flame graph page's body around inferno's `svg`.
pub(super) fn flame_body(summary: &str, svg: Option<&str>, legend: &str, unit: &str) -> String {
    let Some(svg) = svg else {
        return format!("<p class=summary>{summary}</p>\n<p class=empty>Nothing was sampled.</p>");
    };
    format!(
        "<p class=summary>{summary}</p>\n{legend}<form id=find><label>search <input id=term placeholder=regex size=24></label> <button>Search</button> <button type=button id=clear>Reset</button> <output id=share></output> <span class=hint>click a frame to zoom, “Reset Zoom” (top left) to go back</span></form>\n<div id=graph data-unit=\"{}\">{svg}</div>\n<div id=card hidden></div>",
        escape(unit)
    )
}

/// The top table: flat, flat%, sum%, cum, cum%, sortable by any column;
/// each function links to the flame graph focused on it.
pub(super) fn top_table(top: &Top<'_>, unit: &str, focus_link: impl Fn(&str) -> String) -> String {
    const MAX_ROWS: usize = 2000;
    let mut out = String::from(
        "<table id=top>\n<thead><tr><th data-type=num>flat</th><th data-type=num>flat%</th><th data-type=num>sum%</th><th data-type=num>cum</th><th data-type=num>cum%</th><th data-type=text>function</th><th data-type=text>file:line</th></tr></thead>\n<tbody>\n",
    );
    let mut sum = 0i64;
    for row in top.rows.iter().take(MAX_ROWS) {
        sum = sum.saturating_add(row.flat);
        let share = |v: i64| {
            if top.total == 0 {
                0.0
            } else {
                100.0 * v as f64 / top.total as f64
            }
        };
        let _ = writeln!(
            out,
            "<tr><td data-v={}>{}</td><td data-v={:.4}>{}</td><td data-v={:.4}>{}</td><td data-v={}>{}</td><td data-v={:.4}>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td></tr>",
            row.flat,
            value(row.flat, unit),
            share(row.flat),
            percent(row.flat, top.total),
            share(sum),
            percent(sum, top.total),
            row.cum,
            value(row.cum, unit),
            share(row.cum),
            percent(row.cum, top.total),
            focus_link(row.name),
            escape(&shown(row.name)),
            escape(&place(row.file, row.line))
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if top.rows.len() > MAX_ROWS {
        let _ = write!(
            out,
            "<p class=hint>{} more functions not shown; focus to narrow.</p>",
            top.rows.len() - MAX_ROWS
        );
    }
    out
}

/// `file:line`, the file shortened as a page shows it; the file alone
/// when the line is unknown, nothing when the file is.
fn place(file: &str, line: i64) -> String {
    match (file.is_empty(), line) {
        (true, _) => String::new(),
        (false, 0) => shown(file).into_owned(),
        (false, line) => format!("{}:{line}", shown(file)),
    }
}

/// The page shown while a profile is being taken: it counts down while
/// it posts itself back, then shows that answer (the profile's page, or
/// an error page) in its place. Without scripts, a button posts it.
pub(super) fn working(shell: &Shell<'_>, what: &str, seconds: u64) -> String {
    let body = format!(
        "<div id=working data-seconds={seconds}><p>Taking {}…</p><p class=remaining><output id=remaining>{seconds} s remain</output></p><progress id=progress max={seconds} value=0></progress></div>\n<form id=run method=post><noscript><button>Take it now</button></noscript></form>",
        escape(what)
    );
    let script = format!("{COUNTDOWN}countdown({seconds});{FETCH}");
    shell.page(&body, &script)
}

/// The page that asks how long to profile (a CPU profile) before taking it.
pub(super) fn choose_seconds(shell: &Shell<'_>, default: u64, max: u64) -> String {
    let a = shell.asked;
    let mut body = format!(
        "<p>A CPU profile records for a while before it can be shown. How long?</p>\n<form method=get action='{}' class=choose>\n<input type=hidden name=profile value=\"{}\">\n",
        a.page.path(),
        escape(a.profile.0.name())
    );
    for (k, v) in [
        ("sample_index", a.sample_index.clone()),
        ("focus", a.focus.as_ref().map(|p| p.0.to_string())),
        ("ignore", a.ignore.as_ref().map(|p| p.0.to_string())),
    ] {
        if let Some(v) = v {
            let _ = writeln!(
                body,
                "<input type=hidden name={k} value=\"{}\">",
                escape(&v)
            );
        }
    }
    let _ = write!(
        body,
        "<label>seconds <input name=seconds type=number min=1 max={max} value={default}></label> <button>Profile</button>\n</form>"
    );
    shell.page(&body, "")
}

/// The diff page before anything is compared: against N seconds ago, or
/// against an uploaded baseline.
pub(super) fn choose_diff(shell: &Shell<'_>, default: u64, max: u64) -> String {
    let a = shell.asked;
    let name = escape(a.profile.0.name());
    let seconds = format!("<input name=seconds type=number min=1 max={max} value={default}>");
    let (over_time, takes, new_profile) = if a.windowed() {
        (
            format!("Compare the next {seconds} s of CPU time with the {default} s before"),
            "2 × seconds",
            format!("<label>new profile: {seconds} s</label> "),
        )
    } else {
        (
            format!("Compare now with {seconds} seconds from now"),
            "seconds",
            String::new(),
        )
    };
    let body = format!(
        "<section><h2>Over time</h2><form method=get action=diff class=choose><input type=hidden name=profile value=\"{name}\"><label>{over_time}</label> <button>Compare</button> <span class=hint>takes {takes}</span></form></section>\n<section><h2>Against a baseline</h2><form method=post action=\"{}\" enctype=multipart/form-data class=choose id=upload><label>saved profile (.pb.gz) <input type=file name=baseline required></label> {new_profile}<button>Compare</button></form><p class=hint>Save one with <code>curl -o base.pb.gz http://HOST/debug/pprof/{name}</code>. It is read for this page only, never stored.</p></section>\n<div id=working hidden><p>Taking the new profile…</p><p class=remaining><output id=remaining></output></p><progress id=progress value=0></progress></div>",
        href("diff", &[("profile", a.profile.0.name())]),
    );
    let script = if a.windowed() {
        format!(
            "{COUNTDOWN}document.getElementById('upload').addEventListener('submit',function(){{countdown(+this.elements.seconds.value)}});"
        )
    } else {
        String::new()
    };
    shell.page(&body, &script)
}

/// The uploads' form on a view page: open a saved profile instead.
pub(super) fn open_saved(asked: &PageRequest) -> String {
    format!(
        "<details class=open><summary>Open a saved profile</summary><form method=post action=\"{}\" enctype=multipart/form-data><input type=file name=profile required> <button>Open</button> <span class=hint>a .pb.gz from any pprof endpoint or tool; read for this page only, never stored</span></form></details>",
        href(asked.page.path(), &[("profile", asked.profile.0.name())])
    )
}

/// An error as a page: the status, what was wrong (one line), and a way
/// back (to the previous page with scripts, else to the index).
pub(super) fn error(status: http::StatusCode, message: &str, nonce: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n<title>{} {}</title>\n<style nonce=\"{nonce}\">{STYLE}</style>\n</head>\n<body>\n<header><nav><a href='../'>index</a></nav></header>\n<main>\n<h1>{} {}</h1>\n<p class=error id=error>{}</p>\n<p><a href='../' id=back>back</a> · <a href='../'>the index</a></p>\n</main>\n<script nonce=\"{nonce}\">{BACK}</script>\n</body>\n</html>\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        escape(&message.replace(['\r', '\n'], " "))
    )
}

/// The error page's "back": the previous page, when there is one.
const BACK: &str = r#"
document.getElementById('back').addEventListener('click', function(e) {
  if (history.length > 1) { e.preventDefault(); history.back(); }
});
"#;

/// The flame graph page's script: start inferno's, then add the search
/// box and the hover card (function, file:line, value, share).
pub(super) fn flame_script() -> String {
    format!("var UNIT=document.getElementById('graph').dataset.unit;{FORMAT}{FLAME}")
}

/// The top page's script: click a heading to sort by it.
pub(super) const SORT: &str = r#"
document.querySelectorAll('#top th').forEach(function(th, col) {
  th.addEventListener('click', function() {
    var body = document.querySelector('#top tbody');
    var rows = Array.prototype.slice.call(body.rows);
    var down = th.classList.toggle('down');
    var num = th.dataset.type === 'num';
    rows.sort(function(a, b) {
      var x = a.cells[col], y = b.cells[col], d;
      if (num) d = Math.abs(+y.dataset.v) - Math.abs(+x.dataset.v);
      else d = x.textContent.localeCompare(y.textContent);
      return down ? d : -d;
    });
    rows.forEach(function(r) { body.appendChild(r); });
  });
});
"#;

const FORMAT: &str = r#"
function fmt(v) {
  var a = Math.abs(v), s = v < 0 ? '-' : '';
  var steps = UNIT === 'bytes' ? [[1,'B'],[1024,'KiB'],[1048576,'MiB'],[1073741824,'GiB']]
    : UNIT === 'nanoseconds' ? [[1,'ns'],[1e3,'µs'],[1e6,'ms'],[1e9,'s']] : null;
  if (!steps) return s + a.toLocaleString('en');
  var k = steps[0];
  steps.forEach(function(st) { if (a >= st[0]) k = st; });
  var n = a / k[0];
  return s + (n >= 100 || n % 1 === 0 ? n.toFixed(0) : n.toFixed(2)) + ' ' + k[1];
}
"#;

const FLAME: &str = r#"
init();
(function() {
  var frames = document.getElementById('frames');
  var card = document.getElementById('card');
  var total = +frames.getAttribute('total_samples');
  var share = document.getElementById('share');
  function show() {
    var m = document.getElementById('matched').textContent.trim();
    share.textContent = m ? m.replace('Matched', 'matched') + ' of the total' : '';
  }
  document.getElementById('find').addEventListener('submit', function(e) {
    e.preventDefault();
    if (searching) search_prompt();
    var term = document.getElementById('term').value;
    if (term) search(term);
    show();
  });
  document.getElementById('clear').addEventListener('click', function() {
    if (searching) search_prompt();
    document.getElementById('term').value = '';
    show();
  });
  frames.addEventListener('mousemove', function(e) {
    var g = e.target.closest('#frames > g');
    if (!g) { card.hidden = true; return; }
    var title = g.querySelector('title').textContent;
    var rect = g.querySelector('rect');
    var w = +rect.getAttribute('fg:w');
    var name = title.replace(/ \([^(]*\)$/, '');
    var change = (title.match(/; ([-+][0-9.]+%)\)$/) || [])[1];
    card.innerHTML = '';
    [['name', name], ['at', g.getAttribute('data-loc') || ''],
     ['value', fmt(w) + ' · ' + (100 * w / total).toFixed(2) + '% of ' + fmt(total)],
     ['change', change ? change + ' of the total since the baseline' : '']].forEach(function(p) {
      if (!p[1]) return;
      var d = document.createElement('div');
      d.className = p[0];
      d.textContent = p[1];
      card.appendChild(d);
    });
    card.hidden = false;
    card.style.left = Math.min(e.clientX + 14, window.innerWidth - card.offsetWidth - 8) + 'px';
    card.style.top = (e.clientY + 16) + 'px';
  });
  frames.addEventListener('mouseleave', function() { card.hidden = true; });
  // inferno lays the frames out in a timeout of its own; ready is after
  // that and the frame it paints.
  setTimeout(function() {
    requestAnimationFrame(function() {
      setTimeout(function() { window.UI_READY = performance.now(); }, 0);
    });
  }, 0);
})();
"#;

/// Post the page's own address and put the answer in the page's place.
/// The answer is written into this document, which keeps this response's
/// policy: its scripts and styles carry the answer's own nonce (named in
/// its `Content-Security-Policy`), so that one is swapped for this page's.
/// A name in the answer cannot spell it (quotes are escaped, and the
/// answer's nonce is new).
const FETCH: &str = r#"
var NONCE = document.currentScript.nonce;
fetch(location.href, {method: 'POST', credentials: 'same-origin'})
  .then(function(r) {
    var theirs = ((r.headers.get('content-security-policy') || '').match(/'nonce-([0-9a-f]+)'/) || [])[1];
    return r.text().then(function(html) {
      return theirs ? html.split('nonce="' + theirs + '"').join('nonce="' + NONCE + '"') : html;
    });
  })
  .then(function(html) {
    clearInterval(window.COUNTDOWN);
    document.open();
    document.write(html);
    document.close();
  }, function(e) {
    clearInterval(window.COUNTDOWN);
    document.getElementById('remaining').textContent = 'failed: ' + e;
  });
"#;

const COUNTDOWN: &str = r#"
function countdown(seconds) {
  var w = document.getElementById('working');
  var out = document.getElementById('remaining');
  var bar = document.getElementById('progress');
  var end = Date.now() + seconds * 1000;
  w.hidden = false;
  bar.max = seconds;
  function tick() {
    var left = Math.max(0, Math.ceil((end - Date.now()) / 1000));
    out.textContent = left > 0 ? left + ' s remain' : 'done; drawing it…';
    bar.value = seconds - left;
  }
  tick();
  window.COUNTDOWN = setInterval(tick, 250);
}
"#;

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { background: #f3f3f3; border-bottom: 1px solid #ddd; padding: 6px 12px; }
nav a.here { font-weight: bold; text-decoration: none; color: #222; }
form.controls { margin-top: 6px; display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: center; }
main { padding: 8px 12px; }
h1 { font-size: 18px; margin: 4px 0; }
h2 { font-size: 15px; margin: 12px 0 4px; }
.summary { color: #444; margin: 2px 0 6px; }
.hint { color: #777; font-size: 12px; }
.error { color: #a00; font-weight: bold; font-size: 16px; }
.empty { color: #777; font-style: italic; }
#find { margin: 4px 0; }
#share { font-weight: bold; margin: 0 8px; }
#graph svg { width: 100%; display: block; }
#card { position: fixed; background: #fffff0; border: 1px solid #aaa; padding: 4px 8px; font: 12px monospace; max-width: 60em; pointer-events: none; box-shadow: 1px 1px 4px #0003; }
#card .name { font-weight: bold; word-break: break-all; }
#card .at { color: #555; }
table#top { border-collapse: collapse; font: 12px monospace; }
#top th { cursor: pointer; background: #eee; text-align: right; padding: 2px 8px; user-select: none; }
#top th:after { content: ' ⇅'; color: #aaa; }
#top td { text-align: right; padding: 1px 8px; border-bottom: 1px solid #f0f0f0; white-space: nowrap; }
#top td:nth-child(6), #top td:nth-child(7), #top th:nth-child(6), #top th:nth-child(7) { text-align: left; }
#top td:nth-child(6) { white-space: normal; word-break: break-all; min-width: 24em; }
#top td:nth-child(7) { white-space: normal; word-break: break-all; color: #666; }
#top tbody tr:hover { background: #f6f6ff; }
.legend span { padding: 0 6px; margin-right: 8px; }
.grew { background: #f88; } .shrank { background: #88f; }
#working { font-size: 16px; margin: 20px 0; }
#working .remaining { font-size: 22px; font-weight: bold; }
#working progress { width: 320px; }
details.open { margin-top: 14px; }
section { margin-bottom: 10px; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_like_pprof() {
        assert_eq!(value(12_345_678, "bytes"), "11.77 MiB");
        assert_eq!(value(3_330_000_000, "nanoseconds"), "3.33 s");
        assert_eq!(value(-1_234_567, "count"), "-1,234,567");
        assert_eq!(value(512, "bytes"), "512 B");
        assert_eq!(percent(1, 4), "25.00%");
        assert_eq!(percent(1, 0), "–");
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt;"
        );
        assert_eq!(
            href("top", &[("focus", "a<b&c"), ("seconds", "")]),
            "top?focus=a%3Cb%26c"
        );
    }
}
