//! `GetRecommendations` answered with pre-encoded bytes.
//!
//! The cached response of a cluster is encoded once per recomputation; requests without
//! overrides get those bytes as they are. [`Routes`] puts this in front of the generated
//! `RecommenderServer` for that one method and hands every other call to it unchanged.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use prost::bytes::{BufMut, Bytes};
use proxbalance_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::grpc::Service;

/// The method served from encoded bytes.
pub(crate) const GET_RECOMMENDATIONS: &str = "/proxbalance.v1.Recommender/GetRecommendations";

/// Decodes a `GetRecommendationsRequest`, writes already encoded response bytes.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncodedCodec;

#[derive(Debug)]
struct BytesEncoder;

#[derive(Debug)]
struct RequestDecoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RequestDecoder {
    type Item = pb::GetRecommendationsRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        pb::GetRecommendationsRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("request: {e}")))
    }
}

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = pb::GetRecommendationsRequest;
    type Encoder = BytesEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// The unary handler behind the codec.
#[derive(Debug, Clone)]
struct EncodedGet(Arc<Service>);

impl UnaryService<pb::GetRecommendationsRequest> for EncodedGet {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<pb::GetRecommendationsRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            svc.get_recommendations_encoded(request.get_ref())
                .await
                .map(Response::new)
        })
    }
}

/// Routes `GetRecommendations` to the encoded-bytes handler and everything else to `inner`.
#[derive(Debug, Clone)]
pub(crate) struct Routes<S> {
    inner: S,
    service: Arc<Service>,
    max_encoded: usize,
}

impl<S> Routes<S> {
    /// Wraps the generated server `inner`; `service` answers `GetRecommendations`.
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
        if req.uri().path() != GET_RECOMMENDATIONS {
            return Box::pin(self.inner.call(req));
        }
        let handler = EncodedGet(self.service.clone());
        let max_encoded = self.max_encoded;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(PreEncodedCodec)
                .apply_max_message_size_config(None, Some(max_encoded));
            Ok(grpc.unary(handler, req).await)
        })
    }
}
