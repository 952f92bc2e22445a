//! `GetRecommendations` and `WatchRecommendations` answered with pre-encoded bytes.
//!
//! Each cluster's set is encoded once per recomputation, in both views
//! ([`crate::state::Cached`]); answers and watch messages are written around those bytes
//! ([`Encoded`]), so neither a busy recommender nor a hundred watchers clone or re-encode the
//! same megabyte. [`Routes`] puts these two methods in front of the generated
//! `RecommenderServer` and hands every other call to it unchanged.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use prost::bytes::BufMut;
use proxbalance_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};

use super::grpc::{EncodedStream, Service};
use crate::state::Encoded;

/// The method answered with the cached response bytes.
pub(crate) const GET_RECOMMENDATIONS: &str = "/proxbalance.v1.Recommender/GetRecommendations";
/// The method whose messages are written around the cached set bytes.
pub(crate) const WATCH_RECOMMENDATIONS: &str = "/proxbalance.v1.Recommender/WatchRecommendations";

/// Decodes a `Req`, writes already encoded pieces.
struct PreEncodedCodec<Req>(PhantomData<fn() -> Req>);

impl<Req> Default for PreEncodedCodec<Req> {
    fn default() -> Self {
        PreEncodedCodec(PhantomData)
    }
}

#[derive(Debug)]
struct PiecesEncoder;

#[derive(Debug)]
struct RequestDecoder<Req>(PhantomData<fn() -> Req>);

impl Encoder for PiecesEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        for piece in &item {
            dst.put_slice(piece);
        }
        Ok(())
    }
}

impl<Req: Message + Default> Decoder for RequestDecoder<Req> {
    type Item = Req;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        Req::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("request: {e}")))
    }
}

impl<Req: Message + Default + Send + 'static> Codec for PreEncodedCodec<Req> {
    type Encode = Encoded;
    type Decode = Req;
    type Encoder = PiecesEncoder;
    type Decoder = RequestDecoder<Req>;

    fn encoder(&mut self) -> PiecesEncoder {
        PiecesEncoder
    }

    fn decoder(&mut self) -> RequestDecoder<Req> {
        RequestDecoder(PhantomData)
    }
}

/// The unary `GetRecommendations` handler behind the codec.
#[derive(Debug, Clone)]
struct EncodedGet(Arc<Service>);

impl UnaryService<pb::GetRecommendationsRequest> for EncodedGet {
    type Response = Encoded;
    type Future = BoxFuture<Response<Encoded>, Status>;

    fn call(&mut self, request: Request<pb::GetRecommendationsRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            svc.get_recommendations_encoded(request.get_ref())
                .await
                .map(Response::new)
        })
    }
}

/// The `WatchRecommendations` handler behind the codec.
#[derive(Debug, Clone)]
struct EncodedWatch(Arc<Service>);

impl ServerStreamingService<pb::WatchRecommendationsRequest> for EncodedWatch {
    type Response = Encoded;
    type ResponseStream = EncodedStream;
    type Future = BoxFuture<Response<EncodedStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchRecommendationsRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            svc.watch_recommendations_encoded(request.get_ref())
                .map(Response::new)
        })
    }
}

/// Routes the two encoded methods to their handlers and everything else to `inner`.
#[derive(Debug, Clone)]
pub(crate) struct Routes<S> {
    inner: S,
    service: Arc<Service>,
    max_encoded: usize,
}

impl<S> Routes<S> {
    /// Wraps the generated server `inner`; `service` answers the encoded methods.
    pub fn new(inner: S, service: Service, max_encoded: usize) -> Self {
        Routes {
            inner,
            service: Arc::new(service),
            max_encoded,
        }
    }
}

impl<S: NamedService> NamedService for Routes<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for Routes<S>
where
    S: tonic::codegen::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let max_encoded = self.max_encoded;
        match req.uri().path() {
            GET_RECOMMENDATIONS => {
                let handler = EncodedGet(self.service.clone());
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(PreEncodedCodec::default())
                        .apply_max_message_size_config(None, Some(max_encoded));
                    Ok(grpc.unary(handler, req).await)
                })
            }
            WATCH_RECOMMENDATIONS => {
                let handler = EncodedWatch(self.service.clone());
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(PreEncodedCodec::default())
                        .apply_max_message_size_config(None, Some(max_encoded));
                    Ok(grpc.server_streaming(handler, req).await)
                })
            }
            _ => Box::pin(self.inner.call(req)),
        }
    }
}
