//! The framework-free handler: `http::Request` in, `http::Response` out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

use crate::contention::{self, Kind};
use crate::profile::StackProfile;
use crate::request::{self, Named, Route};
use crate::{Config, Error, cpu, encode, goroutine, guard, heap, index, tasks, text, threads};

/// The body of every response: the whole answer at once.
pub type ResponseBody = Full<Bytes>;

/// The error type request bodies must convert into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves Go's `/debug/pprof/*` routes.
///
/// Cheap to clone (an `Arc` inside). Use [`Pprof::handle`] from any
/// framework, or use it as a [`tower_service::Service`] directly.
///
/// It needs a tokio runtime with timers (every axum, actix-web, warp and
/// hyper server runs on one); outside one it answers 500 and says so.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let pprof = pprof_core::Pprof::new(pprof_core::Config::default());
/// let request = http::Request::get("/debug/pprof/cmdline")
///     .body(http_body_util::Empty::<bytes::Bytes>::new())
///     .unwrap();
/// let response = pprof.handle(request).await;
/// assert_eq!(response.status(), 200);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Pprof {
    config: Arc<Config>,
}

/// What a route produced, before headers are decided.
enum Reply {
    Html(String),
    Text(String),
    /// A gzipped profile.proto, served as an attachment named `filename`.
    Profile {
        filename: String,
        body: Vec<u8>,
    },
    /// Headers of a profile without running it (HEAD).
    ProfileHead {
        filename: String,
    },
    Redirect(String),
}

impl Pprof {
    /// A handler with the given settings.
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The settings this handler serves with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True when `path` is this handler's: the prefix itself or below it.
    /// Everything else is some other service's (see [`PprofLayer`](crate::PprofLayer)).
    pub fn serves(&self, path: &str) -> bool {
        path.strip_prefix(self.config.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Answer one request. Never panics on bad input: every failure becomes a
    /// response with the status and one-line message of an [`Error`].
    ///
    /// The request path is matched against the configured prefix as is.
    /// Dropping the returned future (the client went away) stops any profile
    /// it started.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return error_response(&Error::Profiler(
                "pprof-core needs a tokio runtime (with timers) to serve profiles".to_owned(),
            ));
        }
        let (parts, body) = request.into_parts();
        // Who may ask comes first: nothing is read or started for a denied request.
        if let Err(error) = guard::check(&self.config, &parts) {
            return error_response(&error);
        }
        let mut body = Some(body);
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let posts_profile_form = parts.method == Method::POST
            && is_form
            && parts.uri.path() == format!("{}/profile", self.config.prefix);
        let form = if posts_profile_form {
            match read_body(body.take(), self.config.max_body_bytes).await {
                Ok(form) => Some(form),
                Err(error) => return error_response(&error),
            }
        } else {
            None
        };
        let parsed = match request::parse(
            &self.config,
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            form.as_deref(),
        ) {
            Ok(parsed) => parsed,
            Err(error) => return error_response(&error),
        };
        let head_only = parsed.head_only;
        let reply = match parsed.route {
            Route::Redirect { location } => Ok(Reply::Redirect(location)),
            Route::Index => self.index().await,
            Route::Cmdline => Ok(Reply::Text(cmdline())),
            Route::Symbol => {
                symbol(
                    &parts.method,
                    parts.uri.query(),
                    body,
                    self.config.max_body_bytes,
                )
                .await
            }
            Route::Cpu { .. } if head_only => Ok(Reply::ProfileHead {
                filename: "profile".to_owned(),
            }),
            Route::Cpu { duration, hz } => cpu_profile(duration, hz).await,
            Route::Named { profile, debug, .. } if head_only && debug > 0 => {
                available(profile).map(|()| Reply::Text(String::new()))
            }
            Route::Named { profile, delta, .. } if head_only => {
                available(profile).map(|()| Reply::ProfileHead {
                    filename: filename(profile, delta),
                })
            }
            Route::Named {
                profile,
                debug,
                delta,
            } => self.named(profile, debug, delta).await,
        };
        match reply {
            // Every text answer, whichever route made it, is capped here.
            Ok(reply) => match cap_text(reply, self.config.max_text_bytes) {
                Ok(reply) => response(reply),
                Err(error) => error_response(&error),
            },
            Err(error) => error_response(&error),
        }
    }

    /// Like [`Pprof::handle`], but gives up, stopping whatever profile the
    /// request started, as soon as `client_gone` completes; `None` then.
    ///
    /// For servers that keep running a handler after its client hung up
    /// (actix-web does): the adapter supplies a future that completes when
    /// the connection is closed.
    pub async fn handle_until<B>(
        &self,
        request: Request<B>,
        client_gone: impl std::future::Future<Output = ()>,
    ) -> Option<Response<ResponseBody>>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let mut answer = std::pin::pin!(self.handle(request));
        let mut gone = std::pin::pin!(client_gone);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(response) = answer.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(response));
            }
            gone.as_mut().poll(cx).map(|()| None)
        })
        .await
    }

    async fn index(&self) -> Result<Reply, Error> {
        // A bare dump, no symbols: cheap, so it takes no heap-request slot
        // (a heap request meanwhile is not refused); jemalloc's dumps are
        // still one at a time.
        let (heap_stacks, threads) =
            blocking(|| Ok((heap::dump().map_or(0, |d| d.stacks.len()), threads::count()))).await?;
        let task_count = tasks::count();
        let mut entries = vec![
            index::Entry {
                name: "cmdline",
                count: 0,
                description: "The command line invocation of the current program",
            },
            index::Entry {
                name: "profile",
                count: usize::from(cpu::is_running()),
                description: "CPU profile. You can specify the duration in the seconds GET parameter. After you get the profile file, use the go tool pprof command to investigate the profile.",
            },
        ];
        entries.extend(Named::ALL.into_iter().map(|p| index::Entry {
            name: p.name(),
            count: match p {
                Named::Heap | Named::Allocs => heap_stacks,
                Named::Goroutine => threads + task_count,
                Named::Threadcreate => threads,
                Named::Mutex => contention::stack_count(Kind::Mutex),
                Named::Block => contention::stack_count(Kind::Block),
            },
            description: p.description(),
        }));
        Ok(Reply::Html(index::page(&self.config.prefix, entries)))
    }
}

/// Text answers longer than the configured limit are refused (see [`text::cap`]).
fn cap_text(reply: Reply, max: usize) -> Result<Reply, Error> {
    match reply {
        Reply::Text(body) => text::cap(body, max).map(Reply::Text),
        other => Ok(other),
    }
}

fn filename(profile: Named, delta: Option<Duration>) -> String {
    match delta {
        Some(_) => format!("{}-delta", profile.name()),
        None => profile.name().to_owned(),
    }
}

/// Run blocking work (dumps, symbolization, encoding) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Profiler(format!("profile task failed: {e}")))?
}

async fn cpu_profile(duration: Duration, hz: u32) -> Result<Reply, Error> {
    let profile = cpu::profile(duration, hz).await?;
    let body = blocking(move || Ok(encode::gzip_proto(&encode::to_proto(&profile)))).await?;
    Ok(Reply::Profile {
        filename: "profile".to_owned(),
        body,
    })
}

/// Whether a named profile can be served at all (HEAD answers without collecting).
fn available(profile: Named) -> Result<(), Error> {
    match profile {
        Named::Heap | Named::Allocs => heap::check_enabled(),
        Named::Goroutine | Named::Threadcreate | Named::Mutex | Named::Block => Ok(()),
    }
}

/// Held while a heap or allocs request works (see [`heap::claim_dump_slot`]).
type HeapSlot = Option<Arc<heap::DumpSlot>>;

impl Pprof {
    /// One snapshot of a named profile, collected on a blocking thread
    /// (which holds `slot` until it is done, even if the client left).
    /// Text (`debug>0`) carries raw counts where the profile is sampled, as
    /// Go's text carries its raw records; the proto carries estimates.
    async fn snapshot(
        &self,
        profile: Named,
        debug: u32,
        slot: HeapSlot,
    ) -> Result<StackProfile, Error> {
        let (signal, timeout) = (self.config.thread_signal, self.config.thread_timeout);
        let tasks = match profile {
            Named::Goroutine => tasks::samples(self.config.task_dump_timeout).await,
            _ => Vec::new(),
        };
        blocking(move || {
            let _working = slot;
            match profile {
                Named::Heap => Ok(heap::to_profile(&heap::dump()?, None, debug == 0)),
                Named::Allocs => Ok(heap::to_profile(
                    &heap::dump()?,
                    Some("alloc_space"),
                    debug == 0,
                )),
                Named::Goroutine => {
                    let mut profile = goroutine::goroutine(signal, timeout)?;
                    profile.samples.extend(tasks);
                    Ok(if debug >= 2 {
                        profile
                    } else {
                        goroutine::grouped(profile)
                    })
                }
                Named::Threadcreate => {
                    goroutine::threadcreate(signal, timeout).map(goroutine::grouped)
                }
                Named::Mutex => Ok(contention::profile(Kind::Mutex)),
                Named::Block => Ok(contention::profile(Kind::Block)),
            }
        })
        .await
    }

    async fn named(
        &self,
        profile: Named,
        debug: u32,
        delta: Option<Duration>,
    ) -> Result<Reply, Error> {
        // One heap request works at a time; a second one is told so (409)
        // instead of queueing.
        let is_heap = matches!(profile, Named::Heap | Named::Allocs);
        let mut slot: HeapSlot = if is_heap {
            Some(Arc::new(heap::claim_dump_slot()?))
        } else {
            None
        };
        let mut stack_profile = self.snapshot(profile, debug, slot.clone()).await?;
        if let Some(wait) = delta {
            // Waiting is not working: free the slot for others meanwhile,
            // then queue for it (a request once admitted is not turned away).
            slot = None;
            tokio::time::sleep(wait).await;
            if is_heap {
                slot = Some(Arc::new(heap::wait_for_dump_slot().await));
            }
            stack_profile =
                stack_profile.delta_to(self.snapshot(profile, debug, slot.clone()).await?);
        }
        let name = filename(profile, delta);
        blocking(move || {
            let _working = slot;
            if debug == 0 {
                return Ok(Reply::Profile {
                    filename: name,
                    body: encode::gzip_proto(&encode::to_proto(&stack_profile)),
                });
            }
            Ok(Reply::Text(match profile {
                Named::Heap | Named::Allocs => {
                    let mut stats = heap::stats();
                    let cached = crate::symbolize::symbolizer().cached_addresses();
                    stats.push(("pprof_core_symbol_cache_addresses", cached as u64));
                    text::heap(&stack_profile, &stats)
                }
                Named::Goroutine if debug >= 2 => text::thread_dump(&stack_profile),
                Named::Goroutine | Named::Threadcreate => {
                    text::counts(profile.name(), &stack_profile)
                }
                Named::Mutex => contention::text(Kind::Mutex, &stack_profile),
                Named::Block => contention::text(Kind::Block, &stack_profile),
            }))
        })
        .await
    }
}

/// Process arguments joined by NUL bytes, as Go's `/cmdline`.
fn cmdline() -> String {
    std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\0")
}

/// Go's symbol protocol: addresses joined by `+`, in the query (GET) or the
/// body (POST); answer the ones that resolve.
async fn symbol<B>(
    method: &Method,
    query: Option<&str>,
    body: Option<B>,
    max_body: usize,
) -> Result<Reply, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let input = if method == Method::POST {
        read_body(body, max_body).await?
    } else {
        let query = query.unwrap_or_default();
        if query.len() > max_body {
            return Err(Error::BodyTooLarge { limit: max_body });
        }
        query.to_owned()
    };
    blocking(move || {
        let addresses = parse_addresses(&input);
        let resolved = crate::symbolize::symbolizer().resolve_all(addresses.iter().copied());
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
async fn read_body<B>(body: Option<B>, max: usize) -> Result<String, Error>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let Some(body) = body else {
        return Ok(String::new());
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
    Ok(String::from_utf8_lossy(&collected.to_bytes()).into_owned())
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

fn base(status: StatusCode, content_type: &'static str) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "no-store")
}

const TEXT: &str = "text/plain; charset=utf-8";

fn response(reply: Reply) -> Response<ResponseBody> {
    let (builder, body) = match reply {
        Reply::Html(html) => (
            base(StatusCode::OK, "text/html; charset=utf-8"),
            html.into(),
        ),
        Reply::Text(text) => (base(StatusCode::OK, TEXT), text.into()),
        Reply::Profile { filename, body } => (attachment(&filename), body),
        Reply::ProfileHead { filename } => (attachment(&filename), Vec::new()),
        Reply::Redirect(location) => (
            base(StatusCode::MOVED_PERMANENTLY, TEXT).header(
                header::LOCATION,
                HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("./")),
            ),
            Vec::new(),
        ),
    };
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| fallback())
}

fn attachment(filename: &str) -> http::response::Builder {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    base(StatusCode::OK, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, disposition)
}

/// The response for an error: its status, `X-Go-Pprof: 1`, one line of text.
pub(crate) fn error_response(error: &Error) -> Response<ResponseBody> {
    let mut builder = base(error.status(), TEXT).header("x-go-pprof", "1");
    if let Some(challenge) = error.challenge() {
        builder = builder.header(header::WWW_AUTHENTICATE, challenge);
    }
    builder
        .body(Full::new(Bytes::from(format!(
            "{}\n",
            error.to_string().replace(['\r', '\n'], " ")
        ))))
        .unwrap_or_else(|_| fallback())
}

fn fallback() -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"internal error\n")));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(pprof: &Pprof, target: &str, headers: &[(&str, &str)]) -> Response<ResponseBody> {
        let mut request = Request::get(target);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        pprof.handle(request).await
    }

    async fn text(response: Response<ResponseBody>) -> String {
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        String::from_utf8_lossy(&body.unwrap_or_default()).into_owned()
    }

    /// The only test that takes the process-wide heap slot (tests run in parallel).
    #[tokio::test]
    async fn a_heap_request_while_another_works_gets_409_not_a_queue() {
        let pprof = Pprof::new(Config::default());
        let working = heap::claim_dump_slot().expect("slot free");
        assert_eq!(heap::claim_dump_slot().err(), Some(Error::HeapDumpBusy));
        for path in ["/debug/pprof/heap", "/debug/pprof/allocs?debug=1"] {
            let response = get(&pprof, path, &[]).await;
            assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
            assert_eq!(response.headers()["x-go-pprof"], "1");
            assert_eq!(text(response).await, format!("{}\n", Error::HeapDumpBusy));
        }
        drop(working);
        // Free again: this test binary has no jemalloc profiler, so the
        // next answer is the "not enabled" one, not a 409.
        let response = get(&pprof, "/debug/pprof/heap", &[]).await;
        assert_ne!(response.status(), StatusCode::CONFLICT);
        assert!(heap::claim_dump_slot().is_ok());
    }

    #[tokio::test]
    async fn missing_token_is_challenged_wrong_token_forbidden() {
        let pprof = Pprof::new(Config::default().bearer_token("t0ken"));
        let response = get(&pprof, "/debug/pprof/cmdline", &[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(response.headers()["x-go-pprof"], "1");
        let response = get(
            &pprof,
            "/debug/pprof/cmdline",
            &[("authorization", "Bearer x")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let response = get(
            &pprof,
            "/debug/pprof/cmdline",
            &[("authorization", "Bearer t0ken")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn addresses_parse_like_go() {
        assert_eq!(parse_address("0x10"), Some(16));
        assert_eq!(parse_address("010"), Some(8));
        assert_eq!(parse_address("10"), Some(10));
        assert_eq!(parse_address("0"), None);
        assert_eq!(parse_address("zz"), None);
        assert_eq!(parse_address("0x"), None);
        assert_eq!(parse_address("99999999999999999999999"), None);
    }
}
