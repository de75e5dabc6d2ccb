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
use crate::signals::labels as slot;
use crate::sync::watch::Mark;

/// The poll marks of the request spans entered on this thread, by span id
/// (the labels themselves are in the thread's label stack, which owns them).
type Marks = RefCell<Vec<(u64, Mark)>>;

thread_local! {
    static POLLS: Marks = const { RefCell::new(Vec::new()) };
}

/// Put `labels` (on top of what is in force) in force for span `id` of
/// subscriber `source`, and when `watch`, mark the poll it is entered for.
fn enter(source: u64, id: u64, labels: &Labels, watch: bool) {
    let merged = current().with_inner(labels);
    if slot::enter_span(source, id, merged.into_set()) && watch {
        let _ = POLLS.try_with(|polls| {
            if let Ok(mut polls) = polls.try_borrow_mut() {
                polls.push((id, Mark::enter_default()));
            }
        });
    }
}

/// Undo the latest [`enter`] of span `id` of `source` on this thread (only
/// that one: spans may exit in any order).
fn exit(source: u64, id: u64, watch: bool) {
    slot::exit_span(source, id);
    if watch {
        let mark = POLLS.try_with(|polls| {
            let mut polls = polls.try_borrow_mut().ok()?;
            let at = polls.iter().rposition(|(entered, _)| *entered == id)?;
            Some(polls.remove(at))
        });
        drop(mark);
    }
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
#[derive(Clone, Debug)]
pub struct LabelLayer {
    fields: Arc<[String]>,
    /// Tells its subscriber's span ids from other subscribers'.
    source: u64,
}

impl Default for LabelLayer {
    fn default() -> Self {
        Self {
            fields: Arc::default(),
            source: slot::span_source(),
        }
    }
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
            enter(self.source, id.into_u64(), &labels.0, false);
        }
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        exit(self.source, id.into_u64(), false);
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
            source: slot::span_source(),
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
    /// Tells its span ids from other subscribers'.
    source: u64,
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
        let field = |name: &str| {
            fields
                .pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let labels = super::request_labels(
            field("http.request.method").unwrap_or_default(),
            field("http.route"),
        );
        let entry = Some((labels, 1));
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
            enter(self.source, id.into_u64(), &labels, true);
        }
    }

    fn exit(&self, id: &Id) {
        exit(self.source, id.into_u64(), true);
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

    /// Held by the tests that make request spans, which the count of live
    /// ones in `a_request_span_puts_its_labels_in_force_while_entered` sees.
    static REQUEST_SPANS: Mutex<()> = Mutex::new(());

    #[test]
    fn a_request_span_puts_its_labels_in_force_while_entered() {
        let _alone = REQUEST_SPANS.lock().unwrap_or_else(PoisonError::into_inner);
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

    /// Run `work` under a subscriber with a [`LabelLayer`] (span names only).
    fn with_layer<R>(work: impl FnOnce() -> R) -> R {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(LabelLayer::new());
        tracing::subscriber::with_default(subscriber, work)
    }

    fn poll_once<F: std::future::Future>(
        future: std::pin::Pin<&mut F>,
    ) -> std::task::Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        future.poll(&mut cx)
    }

    /// Whether the slot a signal handler reads is empty: no dereference,
    /// so it tells a dangling pointer from none without touching it.
    fn nothing_in_force() -> bool {
        crate::signals::labels::current_ptr().is_null()
    }

    #[test]
    fn a_span_entered_inside_with_and_exited_after_it_leaves_nothing_dangling() {
        with_layer(|| {
            let span = tracing::info_span!("entered_inside_with");
            let entered = crate::labels::with([("k", "v")], || span.enter());
            drop(entered);
            assert!(nothing_in_force(), "the slot points at a freed set");
            assert!(current().is_empty());
        });
    }

    #[test]
    fn a_span_stays_in_force_after_the_scope_it_was_entered_in_ends() {
        with_layer(|| {
            let span = tracing::info_span!("outlives_with");
            let entered = crate::labels::with([("k", "v")], || span.enter());
            // Still entered: its labels (made while k=v was in force) hold.
            let now = current();
            assert_eq!(now.get("span"), Some("outlives_with"));
            assert_eq!(now.get("k"), Some("v"));
            drop(entered);
            assert!(current().is_empty());
        });
    }

    #[test]
    fn a_span_entered_in_a_labeled_future_and_exited_after_it_was_dropped() {
        with_layer(|| {
            let span = tracing::info_span!("entered_in_a_future");
            let mut future = Box::pin(crate::labels::scope([("job", "j")], {
                let span = span.clone();
                async move { span.entered() }
            }));
            let std::task::Poll::Ready(entered) = poll_once(future.as_mut()) else {
                panic!("the future is ready at once");
            };
            drop(future);
            drop(entered);
            assert!(nothing_in_force(), "the slot points at a freed set");
        });
    }

    #[test]
    fn a_future_holding_an_entered_span_across_an_await_dropped_while_suspended() {
        // What an actix-web handler holding `span.entered()` across an
        // `.await` does when its client goes away mid-request.
        with_layer(|| {
            let span = tracing::info_span!("held_across_await");
            let mut future = Box::pin(crate::labels::scope([("job", "held")], async move {
                let _entered = span.entered();
                std::future::pending::<()>().await;
            }));
            assert!(poll_once(future.as_mut()).is_pending());
            drop(future);
            assert!(nothing_in_force(), "the slot points at a freed set");
            assert!(current().is_empty());
        });
    }

    #[test]
    fn spans_exited_out_of_order_keep_the_inner_one_in_force_until_it_exits() {
        with_layer(|| {
            let outer = tracing::info_span!("outer");
            let inner = tracing::info_span!("inner");
            let entered_outer = outer.enter();
            let entered_inner = inner.enter();
            drop(entered_outer);
            // As tracing's registry: the inner span is still the current one.
            assert_eq!(current().get("span"), Some("inner"));
            drop(entered_inner);
            assert!(nothing_in_force());
        });
    }

    #[test]
    fn a_request_span_entered_from_a_tls_destructor_is_never_left_in_force() {
        use std::cell::RefCell;
        use std::sync::mpsc;

        /// Enters its span when the thread's thread-locals are torn down.
        struct EnterOnDrop {
            span: RefCell<Option<tracing::Span>>,
            seen: RefCell<Option<mpsc::Sender<(bool, bool)>>>,
        }
        impl Drop for EnterOnDrop {
            fn drop(&mut self) {
                let (Some(span), Some(seen)) = (self.span.take(), self.seen.take()) else {
                    return;
                };
                let entered = span.enter();
                let during = nothing_in_force();
                drop(entered);
                let after = nothing_in_force();
                let _ = seen.send((during, after));
            }
        }
        thread_local! {
            static LATER: EnterOnDrop = const {
                EnterOnDrop { span: RefCell::new(None), seen: RefCell::new(None) }
            };
        }
        let _alone = REQUEST_SPANS.lock().unwrap_or_else(PoisonError::into_inner);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Registered first, so torn down after the label machinery's
            // own thread-locals, which the next lines set up.
            LATER.with(|later| {
                *later.span.borrow_mut() = Some(request_span("GET", "/late"));
                *later.seen.borrow_mut() = Some(tx);
            });
            let warm = request_span("GET", "/warm");
            drop(warm.enter());
            assert!(nothing_in_force());
        })
        .join()
        .expect("thread");
        let (during, after) = rx.recv().expect("the destructor ran");
        assert!(
            after,
            "a span entered from a TLS destructor left a set in force"
        );
        // Nothing can keep a set in force once the thread's own storage is
        // gone: the span runs unlabeled rather than with a freed set.
        assert!(during, "a set was put in force with no owner left");
    }

    fn requests_live() -> usize {
        requests()
            .downcast_ref::<RequestSpans>()
            .map_or(0, |r| r.spans().live.iter().filter(|e| e.is_some()).count())
    }
}
