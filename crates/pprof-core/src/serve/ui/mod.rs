//! Pages for people: a flame graph, a top table and a diff of every
//! profile, under `{prefix}/ui/`, so a browser is all it takes to read
//! them (no Go toolchain). Paths and parameters mirror pprof's own web UI:
//!
//! | page | what |
//! |---|---|
//! | `ui/flamegraph?profile=NAME` | inferno's interactive flame graph: click to zoom, search, hover for function, file:line, value and share |
//! | `ui/top?profile=NAME` | flat, flat %, sum %, cum, cum %, per function, sortable |
//! | `ui/diff?profile=NAME` | a differential flame graph and the change per function: now against N seconds ago, or against an uploaded baseline |
//!
//! NAME is the route's (`profile` for CPU, `heap`, `allocs`, …); optional
//! `sample_index` (a type name or number), `focus` and `ignore` (regexes
//! over function names and files) and `seconds` (a CPU profile's length, a
//! delta's gap). The pages are answered by the same handler as the data
//! routes, after the same guards, with the same admission slots; a page
//! whose profile takes time answers `GET` at once with a page that counts
//! down while it sends the same request as a `POST` (which does the work)
//! and then shows that answer in its place. A bad parameter is a
//! page that says which. Uploads are bounded, read and dropped: a few
//! are received at once, each within a deadline, then one at a time is
//! decoded and drawn, holding its slot until its page is done; a page
//! whose client has gone stops drawing.

mod flame;
mod html;
mod model;
mod top;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use regex::{Regex, RegexBuilder};

use self::flame::Graph;
use self::html::Shell;
use self::model::Stacks;
use super::BoxError;
use super::params::{Named, Params};
use super::profile::{Collected, collect};
use super::respond::{Nonce, Reply};
use crate::format::{self, StackProfile};
use crate::profiles::{self, Ask, Cancel, PROFILES, Permit, Profile, Seconds, Slot, blocking};
use crate::{Config, Error};

/// A page of `ui/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    Flamegraph,
    Top,
    Diff,
}

impl Page {
    /// Its path under `ui/`.
    fn path(self) -> &'static str {
        match self {
            Self::Flamegraph => "flamegraph",
            Self::Top => "top",
            Self::Diff => "diff",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Flamegraph => "flame graph",
            Self::Top => "top",
            Self::Diff => "diff",
        }
    }
}

/// A `focus` or `ignore` regex, compared by its text.
#[derive(Debug, Clone)]
pub(crate) struct Pattern(Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// A request for a page, its parameters checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageRequest {
    page: Page,
    profile: Named,
    /// As asked (a type name or index); checked against the profile's types.
    sample_index: Option<String>,
    seconds: Option<Duration>,
    focus: Option<Pattern>,
    ignore: Option<Pattern>,
    hz: u32,
}

impl PageRequest {
    /// Whether the profile is taken over a window (CPU) rather than a snapshot.
    fn windowed(&self) -> bool {
        self.profile.0.about().seconds == Seconds::Window
    }

    /// How long the profile takes, when it is more than a snapshot.
    fn takes(&self) -> Option<Duration> {
        let seconds = self.seconds?;
        Some(if self.page == Page::Diff && self.windowed() {
            seconds * 2
        } else {
            seconds
        })
    }
}

/// The longest `focus` or `ignore` a page takes.
const MAX_PATTERN: usize = 1000;

/// Parse a page's path (after `ui/`) and parameters.
pub(crate) fn parse(config: &Config, page: &str, params: &Params) -> Result<PageRequest, Error> {
    let page = match page {
        "flamegraph" => Page::Flamegraph,
        "top" => Page::Top,
        "diff" => Page::Diff,
        other => return Err(Error::UnknownPage(other.to_owned())),
    };
    let name = params.get("profile").unwrap_or_default().trim();
    let profile = profiles::find(name).ok_or_else(|| {
        let mut known: Vec<&str> = PROFILES.iter().map(|p| p.name()).collect();
        known.sort_unstable();
        Error::NoSuchProfile {
            name: name.to_owned(),
            known: known.join(", "),
        }
    })?;
    let sample_index = params
        .get("sample_index")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    model::type_index(&declared_types(profile), None, sample_index.as_deref())?;
    Ok(PageRequest {
        page,
        profile: Named(profile),
        sample_index,
        seconds: params.seconds(config.max_duration)?,
        focus: pattern(params, "focus")?,
        ignore: pattern(params, "ignore")?,
        hz: params.hz(config)?,
    })
}

fn pattern(params: &Params, param: &'static str) -> Result<Option<Pattern>, Error> {
    let Some(raw) = params.get(param).filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    let invalid = |why: String| Error::InvalidRegex { param, why };
    if raw.len() > MAX_PATTERN {
        return Err(invalid(format!("longer than {MAX_PATTERN} bytes")));
    }
    RegexBuilder::new(raw)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map(|re| Some(Pattern(re)))
        .map_err(|e| {
            invalid(
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
}

/// One uploaded profile is decoded and drawn at a time in the process,
/// holding this slot from the moment its body has arrived until its page
/// is done; another meanwhile is refused (409), so uploads cannot pile up
/// work.
static UPLOADS: Slot = Slot::new(Error::UploadBusy);

/// How many uploads may be arriving at once (each buffers up to
/// `Config::upload_limits`' bytes); one more is refused (409). A slow
/// sender holds one of these places, never the slot that decodes and
/// draws.
const RECEIVING_AT_ONCE: usize = 4;

static RECEIVING: Slot = Slot::limited(
    RECEIVING_AT_ONCE,
    Error::UploadsArriving {
        limit: RECEIVING_AT_ONCE,
    },
);

/// How long an upload may take to arrive: 8 MiB at 280 KiB/s. A sender
/// slower than that is answered 408 and its place freed.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(30);

/// Answer a page request: the page, or an error as a page.
pub(super) async fn serve<B>(
    config: &Config,
    asked: Result<PageRequest, Error>,
    parts: &http::request::Parts,
    body: Option<B>,
    head_only: bool,
) -> Reply
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let nonce = Nonce::fresh();
    match page(config, asked, parts, body, head_only, &nonce).await {
        Ok(html) => Reply::Page {
            status: StatusCode::OK,
            html,
            nonce,
        },
        Err(error) => error_page(&error, nonce),
    }
}

/// An error as a page, with its status.
fn error_page(error: &Error, nonce: Nonce) -> Reply {
    let status = error.status();
    Reply::Page {
        status,
        html: html::error(status, &error.to_string(), nonce.as_str()),
        nonce,
    }
}

/// A file someone sent, as it came: a baseline (diff) or a saved profile.
struct Upload {
    file: Bytes,
    /// The form's other fields (`seconds`, …), which win over the query's.
    fields: String,
}

/// An upload decoded, with the slot it holds until its page is drawn.
struct Uploaded {
    stacks: Stacks,
    _drawing: Permit,
}

async fn page<B>(
    config: &Config,
    asked: Result<PageRequest, Error>,
    parts: &http::request::Parts,
    body: Option<B>,
    head_only: bool,
    nonce: &Nonce,
) -> Result<String, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let mut asked = asked?;
    if head_only {
        return Ok(String::new());
    }
    // Set when this request is dropped (its client went away): the
    // blocking steps stop at their next check.
    let cancel = Cancel::default();
    let _cancel_when_gone = cancel.on_drop();
    let post = parts.method == Method::POST;
    // An upload is read and checked first, one at a time, before any
    // profile is taken: a bad file is refused at once.
    let upload = if post && is_upload(parts) {
        Some(read_profile_upload(config, &mut asked, parts, body, &cancel).await?)
    } else {
        None
    };
    if upload.is_none() {
        if let Some(interim) = interim_page(config, &asked, post, nonce) {
            return Ok(interim);
        }
    }
    // The work: collect (unless an upload is all it shows), then draw off
    // the workers.
    let window = if asked.windowed() {
        asked
            .seconds
            .unwrap_or(config.default_duration.min(config.max_duration))
    } else {
        Duration::ZERO
    };
    let ask = Ask::new(config, 0, window, asked.hz);
    let view_upload = asked.page != Page::Diff && upload.is_some();
    let collected = if view_upload {
        None
    } else {
        // A second profile: a delta's, or a diff over time's (for CPU, a
        // second window); a window profile's `seconds` is its length, and a
        // baseline takes the second one's place.
        let second = upload.is_none() && (asked.page == Page::Diff || !asked.windowed());
        let delta = asked.seconds.filter(|_| second);
        Some(collect(asked.profile.0, ask, delta).await?)
    };
    let nonce = nonce.clone();
    blocking(move || draw(&asked, collected, upload, &nonce, &cancel)).await
}

/// Receive an uploaded profile (a baseline or a saved profile), then
/// claim the upload slot and decode it off the workers; the form's own
/// fields replace the query's in `asked`.
async fn read_profile_upload<B>(
    config: &Config,
    asked: &mut PageRequest,
    parts: &http::request::Parts,
    body: Option<B>,
    cancel: &Cancel,
) -> Result<Uploaded, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let upload = {
        let _arriving = RECEIVING.try_claim()?;
        tokio::time::timeout(UPLOAD_DEADLINE, read_upload(config, parts, body))
            .await
            .map_err(|_| Error::UploadTooSlow {
                seconds: UPLOAD_DEADLINE.as_secs(),
            })??
    };
    if !upload.fields.is_empty() {
        let params = Params::new(&upload.fields, parts.uri.query().unwrap_or_default());
        *asked = parse(config, asked.page.path(), &params)?;
    }
    // Only now, with the whole body here, is the slot taken.
    let drawing = UPLOADS.try_claim()?;
    let max_decoded = config.max_upload_decoded_bytes;
    let cancel = cancel.clone();
    blocking(move || {
        cancel.check()?;
        let proto = format::decode(&upload.file, max_decoded)?;
        drop(upload);
        cancel.check()?;
        Ok(Uploaded {
            stacks: Stacks::from_proto(&proto)?,
            _drawing: drawing,
        })
    })
    .await
}

/// The page shown before any work, when there is no upload: a choice of
/// seconds (a diff's gap, a CPU profile's length) when none was given, or,
/// for a `GET` of a page that takes time, the countdown page that sends
/// the same request as a `POST`.
fn interim_page(config: &Config, asked: &PageRequest, post: bool, nonce: &Nonce) -> Option<String> {
    let types = declared_types(asked.profile.0);
    let name = asked.profile.0.name();
    let shell = |heading: String| Shell {
        asked,
        heading,
        types: &types,
        shown: None,
        nonce: nonce.as_str(),
    };
    let max = config.max_duration.as_secs();
    let default = config
        .default_duration
        .min(config.max_duration)
        .as_secs()
        .min(10);
    if asked.seconds.is_none() {
        if asked.page == Page::Diff {
            let shell = shell(format!("{name}: what changed?"));
            return Some(html::choose_diff(&shell, default, max));
        }
        if asked.windowed() {
            let shell = shell(format!("{name}: {}", asked.page.title()));
            return Some(html::choose_seconds(&shell, default, max));
        }
    }
    let takes = asked.takes().filter(|_| !post)?;
    let what = if asked.windowed() {
        format!("a {} s CPU profile", takes.as_secs())
    } else {
        format!("two {name} profiles {} s apart", takes.as_secs())
    };
    let shell = shell(format!("{name}: {}", asked.page.title()));
    Some(html::working(&shell, &what, takes.as_secs()))
}

/// A profile's declared sample types `(type, unit)`, before anything is collected.
fn declared_types(profile: &dyn Profile) -> Vec<(String, String)> {
    profile
        .about()
        .sample_types
        .iter()
        .map(|t| (t.kind.to_owned(), t.unit.to_owned()))
        .collect()
}

/// A collected profile as the pages read it.
fn resolve(profile: &StackProfile) -> Result<Stacks, Error> {
    Stacks::from_proto(&format::to_proto(profile))
        .map_err(|e| Error::Profiler(format!("our own profile did not resolve: {e}")))
}

/// Draw the page from what was collected and what was uploaded (holding
/// the upload's slot until it is drawn); stops, with an error nobody
/// reads, once `cancel` is set.
fn draw(
    asked: &PageRequest,
    collected: Option<Collected>,
    uploaded: Option<Uploaded>,
    nonce: &Nonce,
    cancel: &Cancel,
) -> Result<String, Error> {
    #[cfg(test)]
    let _paused = tests::pause_drawing();
    cancel.check()?;
    let (mut working, first, later) = match collected {
        Some(Collected {
            first,
            later,
            working,
        }) => (working, Some(first), later),
        None => (None, None, None),
    };
    let draw = Drawing {
        asked,
        nonce: nonce.as_str(),
        cancel,
    };
    let page = match (
        asked.page,
        first,
        later,
        uploaded.as_ref().map(|u| &u.stacks),
    ) {
        // A saved profile, viewed as it is.
        (_, None, _, Some(saved)) => draw.view(saved, "saved profile"),
        // Now against a baseline.
        (Page::Diff, Some(now), _, Some(baseline)) => {
            let now = resolve(&now)?;
            drop(working.take());
            draw.diff(baseline, &now, "the uploaded baseline", "now")
        }
        // Now against N seconds ago.
        (Page::Diff, Some(before), Some(after), None) => {
            let (before, after) = (resolve(&before)?, resolve(&after)?);
            drop(working.take());
            let seconds = asked.seconds.unwrap_or_default().as_secs();
            let (was, is) = if asked.windowed() {
                ("the first window", "the second")
            } else {
                ("before", "after")
            };
            let was = format!("{was} ({seconds} s earlier)");
            draw.diff(&before, &after, &was, is)
        }
        // A delta profile, as Go's `?seconds=N` serves it.
        (_, Some(before), Some(after), None) => {
            let delta = resolve(&before.delta_to(after))?;
            drop(working.take());
            let seconds = asked.seconds.unwrap_or_default().as_secs();
            draw.view(&delta, &format!("delta over {seconds} s"))
        }
        (_, Some(now), None, None) => {
            let now = resolve(&now)?;
            drop(working.take());
            draw.view(&now, &snapshot_caption(asked))
        }
        _ => Err(Error::Profiler(
            "nothing was collected for this page".to_owned(),
        )),
    };
    drop(working);
    drop(uploaded);
    page
}

/// What drawing a page needs besides its profiles.
struct Drawing<'a> {
    asked: &'a PageRequest,
    nonce: &'a str,
    cancel: &'a Cancel,
}

/// What a page of one profile shows: a CPU profile's window, or "now".
fn snapshot_caption(asked: &PageRequest) -> String {
    if asked.windowed() {
        let seconds = asked.seconds.unwrap_or_default().as_secs();
        format!("{seconds} s CPU profile")
    } else {
        "now".to_owned()
    }
}

fn focus(asked: &PageRequest) -> Option<&Regex> {
    asked.focus.as_ref().map(|p| &p.0)
}

fn ignore(asked: &PageRequest) -> Option<&Regex> {
    asked.ignore.as_ref().map(|p| &p.0)
}

/// What a differential flame graph's colours mean.
const DIFF_LEGEND: &str = "<p class=legend>Widths are now; colour is the change: <span class=grew>grew</span><span class=shrank>shrank</span> (stacks that vanished have no width: see the table).</p>\n";

impl Drawing<'_> {
    /// The flame graph or top page of one profile.
    fn view(&self, stacks: &Stacks, what: &str) -> Result<String, Error> {
        let asked = self.asked;
        let index = stacks.type_index(asked.sample_index.as_deref())?;
        let keep = stacks.keep(focus(asked), ignore(asked));
        let name = asked.profile.0.name();
        let (kind, unit) = (&stacks.types[index].0, stacks.unit(index).to_owned());
        let shell = Shell {
            asked,
            heading: format!("{name}: {} of {kind} ({what})", asked.page.title()),
            types: &stacks.types,
            shown: Some(index),
            nonce: self.nonce,
        };
        let table = top::top(&[(stacks, index, &keep, 1)], self.cancel)?;
        let kept = keep.iter().filter(|k| **k).count();
        let mut summary = format!(
            "Type: {} · total {} · {kept} of {} samples kept",
            html::escape(kind),
            html::value(table.total, &unit),
            stacks.samples.len()
        );
        if stacks.duration_nanos > 0 {
            summary.push_str(&format!(
                " · duration {}",
                html::value(stacks.duration_nanos, "nanoseconds")
            ));
        }
        let (body, script) = match asked.page {
            Page::Top => {
                let link = |f: &str| focus_link(&shell, f);
                (
                    format!(
                        "<p class=summary>{summary}</p>\n{}{}",
                        html::top_table(&table, &unit, link),
                        html::open_saved(asked)
                    ),
                    html::SORT.to_owned(),
                )
            }
            _ => {
                let graph = Graph::Plain {
                    stacks,
                    index,
                    keep: &keep,
                };
                let title = format!("{name} · {kind}");
                let svg = flame::svg(&graph, &title, self.nonce, self.cancel)?;
                let script = if svg.is_some() {
                    html::flame_script()
                } else {
                    String::new()
                };
                let body = html::flame_body(&summary, svg.as_deref(), "", &unit);
                (format!("{body}\n{}", html::open_saved(asked)), script)
            }
        };
        Ok(shell.page(&body, &script))
    }

    /// The diff page: `after` against `before`, as a differential flame graph
    /// (widths of `after`, red grew, blue shrank) and the change per function.
    fn diff(&self, before: &Stacks, after: &Stacks, was: &str, is: &str) -> Result<String, Error> {
        let asked = self.asked;
        let after_index = after.type_index(asked.sample_index.as_deref())?;
        let kind = after.types[after_index].0.clone();
        let before_index = before.baseline_type_index(&kind)?;
        let unit = after.unit(after_index).to_owned();
        let (before_keep, after_keep) = (
            before.keep(focus(asked), ignore(asked)),
            after.keep(focus(asked), ignore(asked)),
        );
        let name = asked.profile.0.name();
        let shell = Shell {
            asked,
            heading: format!("{name}: {kind}, {is} against {was}"),
            types: &after.types,
            shown: Some(after_index),
            nonce: self.nonce,
        };
        let was_total = before.total(before_index, &before_keep);
        let is_total = after.total(after_index, &after_keep);
        let summary = format!(
            "Type: {} · {} {} → {} {} ({})",
            html::escape(&kind),
            html::escape(was),
            html::value(was_total, &unit),
            html::escape(is),
            html::value(is_total, &unit),
            html::value(is_total.saturating_sub(was_total), &unit)
        );
        let graph = Graph::Diff {
            before,
            before_index,
            before_keep: &before_keep,
            after,
            after_index,
            after_keep: &after_keep,
        };
        let title = format!("{name} · {kind}: {is} against {was}");
        let svg = flame::svg(&graph, &title, self.nonce, self.cancel)?;
        let changes = top::top(
            &[
                (after, after_index, &after_keep, 1),
                (before, before_index, &before_keep, -1),
            ],
            self.cancel,
        )?;
        let link = |f: &str| focus_link(&shell, f);
        let body = format!(
            "{}\n<h2>Change per function ({is} − {was})</h2>\n{}",
            html::flame_body(&summary, svg.as_deref(), DIFF_LEGEND, &unit),
            html::top_table(&changes, &unit, link)
        );
        let script = match svg {
            Some(_) => format!("{}{}", html::flame_script(), html::SORT),
            None => html::SORT.to_owned(),
        };
        Ok(shell.page(&body, &script))
    }
}

/// The flame graph focused on exactly this function (on the start of its
/// name, when the whole would be longer than a `focus` may be).
fn focus_link(shell: &Shell<'_>, function: &str) -> String {
    let mut focus = String::from("^");
    for c in function.chars() {
        let escaped = regex::escape(c.encode_utf8(&mut [0; 4]));
        if focus.len() + escaped.len() + 1 > MAX_PATTERN {
            return shell.link(Page::Flamegraph, &[("focus", &focus)]);
        }
        focus.push_str(&escaped);
    }
    focus.push('$');
    shell.link(Page::Flamegraph, &[("focus", &focus)])
}

/// Whether a POST carries a file (a form with one, or the bytes themselves).
fn is_upload(parts: &http::request::Parts) -> bool {
    let content_type = content_type(parts);
    content_type.starts_with("multipart/form-data")
        || content_type.starts_with("application/octet-stream")
        || content_type.starts_with("application/gzip")
        || content_type.starts_with("application/x-gzip")
}

fn content_type(parts: &http::request::Parts) -> &str {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Read an upload within `max_upload_bytes`: the file of a form (its
/// first file field) with the form's other fields, or the body itself.
async fn read_upload<B>(
    config: &Config,
    parts: &http::request::Parts,
    body: Option<B>,
) -> Result<Upload, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let limit = config.max_upload_bytes;
    let raw = super::symbol::read_bytes(body, limit)
        .await
        .map_err(|e| match e {
            Error::BodyTooLarge { limit } => Error::UploadTooLarge {
                limit,
                decompressed: false,
            },
            other => other,
        })?;
    let content_type = content_type(parts);
    if !content_type.starts_with("multipart/form-data") {
        return Ok(Upload {
            file: raw,
            fields: String::new(),
        });
    }
    let bad = |e: multer::Error| Error::InvalidUpload(format!("the form could not be read ({e})"));
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let mut form = multer::Multipart::new(Once(Some(raw)), boundary);
    let mut file = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut count = 0;
    while let Some(field) = form.next_field().await.map_err(bad)? {
        count += 1;
        if count > 32 {
            return Err(Error::InvalidUpload(
                "the form has too many fields".to_owned(),
            ));
        }
        let is_file = field.file_name().is_some();
        let name = field.name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(bad)?;
        if is_file {
            if file.is_none() && !data.is_empty() {
                file = Some(data);
            }
        } else if data.len() <= MAX_PATTERN {
            fields.push((name, String::from_utf8_lossy(&data).into_owned()));
        }
    }
    let file = file.ok_or_else(|| Error::InvalidUpload("no file was chosen".to_owned()))?;
    let fields = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    Ok(Upload { file, fields })
}

/// A body already read, as the one-item stream `multer` reads.
struct Once(Option<Bytes>);

impl futures_core::Stream for Once {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

/// Every page of an uploaded `file` as the handler draws it (the flame
/// graph, the top table, a diff against itself) with `query`'s
/// parameters: for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn draw_upload(config: &Config, query: &str, file: &[u8]) -> Result<Vec<String>, Error> {
    let stacks = Stacks::from_proto(&format::decode(file, config.max_upload_decoded_bytes)?)?;
    let cancel = Cancel::default();
    let mut pages = Vec::new();
    for page in [Page::Flamegraph, Page::Top, Page::Diff] {
        let params = Params::new("", &format!("profile=goroutine&{query}"));
        let asked = parse(config, page.path(), &params)?;
        let drawing = Drawing {
            asked: &asked,
            nonce: "fuzz",
            cancel: &cancel,
        };
        pages.push(match page {
            Page::Diff => drawing.diff(&stacks, &stacks, "it", "itself")?,
            _ => drawing.view(&stacks, "saved profile")?,
        });
    }
    Ok(pages)
}

/// Read an upload's body as the handler does: its file's size and the
/// form's other fields. For the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) async fn read_form<B>(
    config: &Config,
    parts: &http::request::Parts,
    body: B,
) -> Result<(usize, String), Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let upload = read_upload(config, parts, Some(body)).await?;
    Ok((upload.file.len(), upload.fields))
}

/// What a parsed page request must respect: for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn assert_within_limits(config: &Config, asked: &PageRequest) {
    if let Some(seconds) = asked.seconds {
        assert!(
            !seconds.is_zero() && seconds <= config.max_duration,
            "{seconds:?}"
        );
    }
    assert!((config.min_hz..=config.max_hz).contains(&asked.hz));
    for pattern in [&asked.focus, &asked.ignore].into_iter().flatten() {
        assert!(pattern.0.as_str().len() <= MAX_PATTERN);
    }
    if let Some(index) = &asked.sample_index {
        assert!(model::type_index(&declared_types(asked.profile.0), None, Some(index)).is_ok());
    }
}

/// The index page's links from a profile's row to its pages.
pub(super) fn index_links(name: &str) -> String {
    let q = |page: &str| html::href(&format!("ui/{page}"), &[("profile", name)]);
    format!(
        "<td><a href=\"{}\">flame graph</a> · <a href=\"{}\">top</a> · <a href=\"{}\">diff</a></td>",
        q("flamegraph"),
        q("top"),
        q("diff")
    )
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, MutexGuard, PoisonError};

    use http_body_util::{BodyExt, Full};
    use prost::Message;

    use super::*;
    use crate::Pprof;

    /// Held by a test, every page's drawing waits at its start.
    static DRAWING: Mutex<()> = Mutex::new(());

    /// Drawings waiting at the start, or past it.
    static DRAWINGS: AtomicUsize = AtomicUsize::new(0);

    /// Where `draw` starts, in tests: counted, then paused while a test
    /// holds [`DRAWING`].
    pub(super) fn pause_drawing() -> MutexGuard<'static, ()> {
        DRAWINGS.fetch_add(1, Ordering::SeqCst);
        DRAWING.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tests that take the process-wide upload places, one at a time.
    static UPLOAD_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A body that sends nothing, ever: a client that stalls.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    /// A saved profile POSTed to a flame graph page.
    fn upload<B>(body: B) -> http::Request<B> {
        http::Request::post("/debug/pprof/ui/flamegraph?profile=goroutine")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .expect("request")
    }

    fn saved_profile() -> Full<Bytes> {
        let p = model::tests::proto(&["goroutine"], &[(&["eat", "main"], &[3])]);
        Full::new(Bytes::from(p.encode_to_vec()))
    }

    /// Wait (up to 20 s; not a timing assertion) until `done`.
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("waited 20 s");
    }

    async fn text(response: http::Response<crate::ResponseBody>) -> (StatusCode, String) {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        (
            status,
            String::from_utf8_lossy(&body.unwrap_or_default()).into_owned(),
        )
    }

    /// Issue 20, points 2 and 7: a sender that stalls holds a place among
    /// those arriving, never the slot, so others are served; a page being
    /// drawn holds the slot until it is done; a page whose client went away
    /// gives it back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(
        clippy::await_holding_lock,
        reason = "holding the drawing paused across the requests is the point"
    )]
    async fn the_upload_slot_is_taken_after_the_body_and_held_while_drawing() {
        let _one = UPLOAD_TESTS.lock().await;
        let pprof = Pprof::new(Config::default());
        let stalled = tokio::spawn({
            let pprof = pprof.clone();
            async move { pprof.handle(upload(Stalled)).await }
        });
        until(|| RECEIVING.free() == RECEIVING_AT_ONCE - 1).await;
        let (status, html) = text(pprof.handle(upload(saved_profile())).await).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains("main"), "{html}");

        let paused = DRAWING.lock().unwrap_or_else(PoisonError::into_inner);
        let before = DRAWINGS.load(Ordering::SeqCst);
        let first = tokio::spawn({
            let pprof = pprof.clone();
            async move { pprof.handle(upload(saved_profile())).await }
        });
        until(|| DRAWINGS.load(Ordering::SeqCst) == before + 1).await;
        assert_eq!(UPLOADS.free(), 0, "the drawing holds the slot");
        let (status, html) = text(pprof.handle(upload(saved_profile())).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "{html}");
        assert!(html.contains("another uploaded profile is being read or drawn"));
        // Its client goes away: the drawing stops and frees the slot.
        first.abort();
        let _ = first.await;
        drop(paused);
        until(|| UPLOADS.free() == 1).await;
        let (status, _) = text(pprof.handle(upload(saved_profile())).await).await;
        assert_eq!(status, StatusCode::OK);
        stalled.abort();
        let _ = stalled.await;
        until(|| RECEIVING.free() == RECEIVING_AT_ONCE).await;
    }

    /// Issue 20, point 7: an upload that does not arrive within the
    /// deadline is a 408 page, and its place is freed.
    #[tokio::test(start_paused = true)]
    async fn an_upload_slower_than_the_deadline_is_a_408_page() {
        let _one = UPLOAD_TESTS.lock().await;
        let pprof = Pprof::new(Config::default());
        let response = pprof.handle(upload(Stalled)).await;
        assert_eq!(response.headers()["x-go-pprof"], "1");
        let (status, html) = text(response).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(
            html.contains("the upload did not arrive within 30 s"),
            "{html}"
        );
        assert_eq!(RECEIVING.free(), RECEIVING_AT_ONCE);
    }

    /// A page drawn for a client that has gone is not drawn.
    #[test]
    fn a_cancelled_drawing_draws_nothing() {
        let asked = ask("profile=goroutine").expect("parses");
        let cancel = Cancel::default();
        cancel.cancel();
        let drawn = draw(&asked, None, None, &Nonce::fresh(), &cancel);
        assert!(matches!(drawn, Err(Error::Profiler(why)) if why.contains("abandoned")));
    }

    fn ask(query: &str) -> Result<PageRequest, Error> {
        let params = Params::new("", query);
        let page = query.split_once('#').map_or("flamegraph", |(p, _)| p);
        parse(&Config::default(), page, &params)
    }

    #[test]
    fn bad_parameters_say_which() {
        let snapshot = PROFILES
            .iter()
            .find(|p| p.about().seconds == Seconds::Delta)
            .map(|p| p.name())
            .unwrap_or_default();
        assert!(matches!(
            ask("profile=nope"),
            Err(Error::NoSuchProfile { name, known }) if name == "nope" && known.contains(snapshot)
        ));
        assert!(matches!(
            ask(&format!("profile={snapshot}&sample_index=bogus")),
            Err(Error::NoSuchSampleType { asked, .. }) if asked == "bogus"
        ));
        assert!(matches!(
            ask(&format!("profile={snapshot}&focus=(")),
            Err(Error::InvalidRegex { param: "focus", why }) if !why.contains('\n')
        ));
        assert!(matches!(
            ask(&format!("profile={snapshot}&ignore=[")),
            Err(Error::InvalidRegex {
                param: "ignore",
                ..
            })
        ));
        assert_eq!(
            ask(&format!("profile={snapshot}&seconds=x")),
            Err(Error::InvalidSeconds)
        );
        let page = parse(
            &Config::default(),
            "nope",
            &Params::new("", &format!("profile={snapshot}")),
        );
        assert_eq!(page, Err(Error::UnknownPage("nope".into())));
        let ok = ask(&format!(
            "profile={snapshot}&sample_index=0&focus=a|b&seconds=5"
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn index_links_are_relative_and_escaped() {
        assert_eq!(
            index_links("a<b&c"),
            "<td><a href=\"ui/flamegraph?profile=a%3Cb%26c\">flame graph</a> · <a href=\"ui/top?profile=a%3Cb%26c\">top</a> · <a href=\"ui/diff?profile=a%3Cb%26c\">diff</a></td>"
        );
    }
}
