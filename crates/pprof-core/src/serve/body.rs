//! A request body that a framework hands over as a stream of chunks
//! (actix-web's `Payload`, warp's `body::stream()`), read by the core as
//! an `http_body::Body` only when a route needs it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_core::Stream;

/// A request body read from a stream of chunks, for adapters whose
/// framework does not speak `http_body`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use http_body_util::BodyExt;
/// let chunks = [Ok::<_, std::io::Error>(bytes::Bytes::from("0x1 0x2"))];
/// let body = pprof_core::StreamBody::new(tokio_stream_like(chunks));
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "0x1 0x2");
/// # fn tokio_stream_like<T: Unpin>(items: [T; 1]) -> impl futures_core::Stream<Item = T> {
/// #     struct Items<T>(Option<T>);
/// #     impl<T: Unpin> futures_core::Stream for Items<T> {
/// #         type Item = T;
/// #         fn poll_next(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
/// #             std::task::Poll::Ready(self.0.take())
/// #         }
/// #     }
/// #     let [item] = items;
/// #     Items(Some(item))
/// # }
/// # });
/// ```
pub struct StreamBody<S> {
    chunks: Option<Pin<Box<S>>>,
}

impl<S> StreamBody<S> {
    /// The body the stream's chunks make.
    pub fn new(chunks: S) -> Self {
        Self {
            chunks: Some(Box::pin(chunks)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self { chunks: None }
    }
}

impl<S> std::fmt::Debug for StreamBody<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBody")
            .field("empty", &self.chunks.is_none())
            .finish()
    }
}

impl<S, B, E> http_body::Body for StreamBody<S>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
{
    type Data = Bytes;
    type Error = E;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, E>>> {
        let Some(chunks) = self.chunks.as_mut() else {
            return Poll::Ready(None);
        };
        chunks.as_mut().poll_next(cx).map(|chunk| {
            chunk.map(|chunk| {
                chunk.map(|mut b| http_body::Frame::data(b.copy_to_bytes(b.remaining())))
            })
        })
    }
}
