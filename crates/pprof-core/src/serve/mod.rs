//! The HTTP face: [`Pprof::handle`] (`http::Request` in, `http::Response`
//! out), request parsing, the access guards, admission, the index page, the
//! pages for people (`ui/`), the tower `Service`/`Layer`s, and the one
//! function that turns an [`Error`] into a status, headers and message.
//! The only room that names `http`, `http_body` or `tower`; it knows
//! profiles only through the [`profiles`](crate::profiles) registry.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::Full;

use crate::{Config, Error};

mod body;
pub(crate) mod client;
mod flight;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod guard;
mod index;
mod params;
mod profile;
mod request;
mod respond;
mod symbol;
pub(crate) mod tower;
#[cfg(feature = "ui")]
mod ui;

pub use body::StreamBody;
use request::Route;
use respond::{Reply, error_response};

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

impl Pprof {
    /// A handler with the given settings. Its
    /// [`thread_signal`](Config::thread_signal) becomes the process's
    /// (poll watching uses it too).
    pub fn new(config: Config) -> Self {
        crate::signals::set_thread_signal(config.thread_signal);
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
        match self.reply(request).await {
            // Every text answer, whichever route made it, is capped here.
            Ok(reply) => match reply.capped(self.config.max_text_bytes) {
                Ok(reply) => reply.into_response(),
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
    /// the connection is closed, such as [`ClientSocket::closed`](crate::ClientSocket::closed).
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

    /// Guard, parse and route one request.
    async fn reply<B>(&self, request: Request<B>) -> Result<Reply, Error>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Profiler(
                "pprof-core needs a tokio runtime (with timers) to serve profiles".to_owned(),
            ));
        }
        let (parts, body) = request.into_parts();
        // Who may ask comes first: nothing is read or started for a denied request.
        guard::check(&self.config, &parts)?;
        let mut body = Some(body);
        let form = if self.posts_a_form(&parts) {
            Some(symbol::read_body(body.take(), self.config.max_body_bytes).await?)
        } else {
            None
        };
        let parsed = request::parse(
            &self.config,
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            form.as_deref(),
        )?;
        match parsed.route {
            Route::Redirect { location } => Ok(Reply::Redirect(location)),
            Route::Index => {
                let notice = parts.extensions.get::<client::MountNotice>();
                index::page(&self.config.prefix, notice.map(|n| n.0)).await
            }
            Route::Cmdline => Ok(Reply::Text(symbol::cmdline())),
            // HEAD: the headers of a symbol answer; no lookup.
            Route::Symbol if parsed.head_only => Ok(Reply::Text(String::new())),
            Route::Symbol => {
                symbol::answer(&parts.method, parts.uri.query(), body, &self.config).await
            }
            Route::Profile(asked) if parsed.head_only => profile::head(&asked),
            Route::Profile(asked) => profile::serve(&self.config, asked).await,
            #[cfg(feature = "ui")]
            Route::Page(asked) => {
                Ok(ui::serve(&self.config, asked, &parts, body, parsed.head_only).await)
            }
        }
    }

    /// Whether the request POSTs a form whose values are the route's parameters.
    fn posts_a_form(&self, parts: &http::request::Parts) -> bool {
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        parts.method == Method::POST
            && is_form
            && request::takes_form(&self.config, parts.uri.path())
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt;

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
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        assert!(!body.unwrap_or_default().is_empty());
    }

    #[test]
    fn outside_a_runtime_the_answer_says_why() {
        let pprof = Pprof::new(Config::default());
        let request = Request::get("/debug/pprof/cmdline")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let response = futures_lite_block_on(pprof.handle(request));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-go-pprof"], "1");
    }

    /// Poll a future to completion on this thread, outside any runtime.
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::yield_now();
        }
    }
}
