//! Labels from `tracing` spans (feature `tracing`).
//!
//! [`LabelLayer`] is a `tracing_subscriber::Layer`: while a span is
//! entered, its name (as `span`) and the fields you choose are labels, so a
//! profile can be focused on a span (`-tagfocus span=reindex`). Spans nest
//! as scopes do: the inner value wins.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let subscriber = tracing_subscriber::registry()
//!     .with(pprof_core::labels::tracing::LabelLayer::new().fields(["tenant"]));
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("reindex", tenant = "acme", batch = 7);
//!     let _entered = span.enter();
//!     let now = pprof_core::labels::current();
//!     assert_eq!(now.get("span"), Some("reindex"));
//!     assert_eq!(now.get("tenant"), Some("acme"));
//!     assert_eq!(now.get("batch"), None, "not a chosen field");
//! });
//! ```
//!
//! [`request_span`] makes the span warp's adapter instruments each request
//! with: it belongs to pprof-core's own dispatcher, not the application's
//! subscriber, so it needs none and changes nothing the application sees.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::{Labels, current};
use crate::signals::labels::{LabelSet, restore, swap_in_force};
use crate::sync::watch::Mark;

/// One entered span on this thread: its id, the set it put in force (kept
/// alive while in force), what was in force before, its poll mark.
struct Entered {
    id: u64,
    _labels: Labels,
    previous: *const LabelSet,
    _poll: Option<Mark>,
}

thread_local! {
    static ENTERED: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
}

/// Put `labels` (on top of what is in force) in force for span `id`.
fn enter(id: u64, labels: &Labels, watch: bool) {
    let merged = current().with_inner(labels);
    let previous = swap_in_force(merged.set());
    let poll = watch.then(Mark::enter_default);
    let _ = ENTERED.try_with(|entered| {
        entered.borrow_mut().push(Entered {
            id,
            _labels: merged,
            previous,
            _poll: poll,
        });
    });
}

/// Undo span `id`'s [`enter`] (and any entered after it, not exited).
fn exit(id: u64) {
    let _ = ENTERED.try_with(|entered| {
        let mut entered = entered.borrow_mut();
        if let Some(at) = entered.iter().rposition(|e| e.id == id) {
            let undone: Vec<Entered> = entered.drain(at..).collect();
            // The earliest holds what was in force before them all.
            restore(undone[0].previous);
            drop(undone);
        }
    });
}

/// Labels from a span's name and chosen fields.
struct Fields<'a> {
    chosen: &'a [String],
    pairs: Vec<(String, String)>,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.chosen.iter().any(|c| c == field.name()) {
            self.pairs.push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.chosen.iter().any(|c| c == field.name()) {
            self.pairs
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

/// A `tracing_subscriber::Layer` that puts each entered span's name (label
/// `span`) and chosen fields in force as labels; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct LabelLayer {
    fields: Arc<[String]>,
}

impl LabelLayer {
    /// Label with span names only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also label with these fields of each span (their values as text).
    pub fn fields<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.fields = names.into_iter().map(Into::into).collect();
        self
    }
}

/// A span's labels, kept in its extensions.
struct SpanLabels(Labels);

impl<S> tracing_subscriber::Layer<S> for LabelLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields {
            chosen: &self.fields,
            pairs: Vec::new(),
        };
        attrs.record(&mut fields);
        let mut pairs = vec![("span".to_owned(), attrs.metadata().name().to_owned())];
        pairs.extend(fields.pairs);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanLabels(Labels::new(pairs)));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields {
            chosen: &self.fields,
            pairs: Vec::new(),
        };
        values.record(&mut fields);
        if fields.pairs.is_empty() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            let before = extensions
                .get_mut::<SpanLabels>()
                .map(|l| l.0.clone())
                .unwrap_or_default();
            extensions.replace(SpanLabels(before.merged(fields.pairs)));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(labels) = span.extensions().get::<SpanLabels>()
        {
            enter(id.into_u64(), &labels.0, false);
        }
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        exit(id.into_u64());
    }
}

/// A span, of pprof-core's own dispatcher, that while entered puts
/// `http.route` and `http.request.method` in force and watches the poll it
/// is entered for: what `pprof_warp::label_requests` instruments each
/// request with (through `warp::trace`).
pub fn request_span(method: &str, route: &str) -> tracing::Span {
    tracing::dispatcher::with_default(requests(), || {
        tracing::info_span!(
            "pprof_core_request",
            http.route = route,
            http.request.method = method
        )
    })
}

fn requests() -> &'static Dispatch {
    static DISPATCH: OnceLock<Dispatch> = OnceLock::new();
    DISPATCH.get_or_init(|| {
        Dispatch::new(RequestSpans {
            spans: Mutex::new(Spans::default()),
        })
    })
}

/// The live request spans: labels and reference counts by id.
#[derive(Default)]
struct Spans {
    live: Vec<Option<(Labels, usize)>>,
    free: Vec<usize>,
}

/// The subscriber behind [`request_span`]'s spans.
struct RequestSpans {
    spans: Mutex<Spans>,
}

impl RequestSpans {
    fn spans(&self) -> std::sync::MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn index(id: &Id) -> usize {
    usize::try_from(id.into_u64())
        .unwrap_or(usize::MAX)
        .saturating_sub(1)
}

impl Subscriber for RequestSpans {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let chosen = ["http.route".to_owned(), "http.request.method".to_owned()];
        let mut fields = Fields {
            chosen: &chosen,
            pairs: Vec::new(),
        };
        attrs.record(&mut fields);
        let entry = Some((Labels::new(fields.pairs), 1));
        let mut spans = self.spans();
        let at = match spans.free.pop() {
            Some(at) => {
                spans.live[at] = entry;
                at
            }
            None => {
                spans.live.push(entry);
                spans.live.len() - 1
            }
        };
        Id::from_u64(at as u64 + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, id: &Id) {
        let labels = self
            .spans()
            .live
            .get(index(id))
            .and_then(|e| e.as_ref().map(|(labels, _)| labels.clone()));
        if let Some(labels) = labels {
            enter(id.into_u64(), &labels, true);
        }
    }

    fn exit(&self, id: &Id) {
        exit(id.into_u64());
    }

    fn clone_span(&self, id: &Id) -> Id {
        if let Some(Some((_, refs))) = self.spans().live.get_mut(index(id)) {
            *refs += 1;
        }
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        let mut spans = self.spans();
        let at = index(&id);
        let closed = match spans.live.get_mut(at) {
            Some(Some((_, refs))) if *refs > 1 => {
                *refs -= 1;
                false
            }
            Some(slot @ Some(_)) => {
                *slot = None;
                true
            }
            _ => false,
        };
        if closed {
            spans.free.push(at);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_span_puts_its_labels_in_force_while_entered() {
        let span = request_span("GET", "/users/{id}");
        {
            let _entered = span.enter();
            let now = current();
            assert_eq!(now.get("http.route"), Some("/users/{id}"));
            assert_eq!(now.get("http.request.method"), Some("GET"));
        }
        assert!(current().is_empty());
        let clone = span.clone();
        drop(span);
        drop(clone);
        assert!(requests_live() == 0, "closed spans give their slot back");
    }

    fn requests_live() -> usize {
        requests()
            .downcast_ref::<RequestSpans>()
            .map_or(0, |r| r.spans().live.iter().filter(|e| e.is_some()).count())
    }
}
