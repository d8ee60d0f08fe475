//! The path every domain endpoint shares: read the body (refusing at once when the only queue of
//! the kind is full), pick the model with its typed section, run the items through its queue, and
//! answer with who served it and where the time went. Handlers only parse their own request, call
//! these, and shape their answer; the kind's logic lives in `kinds`.

use super::error::{parse_json, ApiError};
use super::{require_json, served_headers, App, AppState, ModelSelector, RequestDeadline};
use crate::batching::{Deadline, ItemOutput, Timing};
use crate::kinds::Kind;
use crate::registry::LoadedVersion;
use crate::tensor::ItemTensor;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// A JSON endpoint's body for kind `K`: 415 unless it is JSON, 429 before parsing when the kind's
/// only queue is full, then the parsed body (400/422 naming the field).
pub fn json_body<K: Kind, T: serde::de::DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    require_json(headers)?;
    app.refuse_early_if_full(K::NAME)?;
    parse_json(body)
}

/// A JSON endpoint's request for kind `K`, extracted in the order every such endpoint answers
/// errors in: the deadline header, the body (413), the `?model=`/`?version=` query, then
/// [`json_body`] (415, 429, 400/422).
pub struct JsonRequest<K, T> {
    /// The server.
    pub app: AppState,
    /// The parsed body.
    pub body: T,
    /// The request's headers.
    pub headers: HeaderMap,
    /// When inference must be done by.
    pub deadline: Deadline,
    query: ModelSelector,
    kind: std::marker::PhantomData<K>,
}

impl<K: Kind, T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for JsonRequest<K, T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        use axum::extract::{FromRequestParts, Query};
        let (mut parts, body) = req.into_parts();
        let RequestDeadline(deadline) = RequestDeadline::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let query = Query::<ModelSelector>::from_request_parts(&mut parts, state).await;
        let bytes = bytes::Bytes::from_request(axum::extract::Request::from_parts(parts, body), state).await?;
        let Query(query) = query?;
        let body = json_body::<K, T>(state, &headers, &bytes)?;
        Ok(JsonRequest { app: state.clone(), body, headers, deadline, query, kind: std::marker::PhantomData })
    }
}

impl<K: Kind, T> JsonRequest<K, T> {
    /// The model the request names (in its body, else in the query) with its typed section.
    pub fn pick(
        &self,
        model: Option<&str>,
        version: Option<u64>,
    ) -> Result<(Arc<LoadedVersion>, Arc<K::Config>), ApiError> {
        self.app.pick::<K>(model.or(self.query.model.as_deref()), version.or(self.query.version))
    }
}

/// Runs one request's items through the version's queue, all or none admitted; errors name the
/// version that was serving.
pub async fn infer(
    v: &Arc<LoadedVersion>,
    items: Vec<Vec<ItemTensor>>,
    deadline: Deadline,
) -> Result<Served, ApiError> {
    let mut served = Served::on(v);
    served.run(items, deadline).await?;
    Ok(served)
}

/// The outcome of one or more forwards for a request.
pub struct Served {
    /// The version that served it.
    pub v: Arc<LoadedVersion>,
    /// One output per item, in request order.
    pub outs: Vec<ItemOutput>,
    /// Every forward's timing (a rolled-out forecast has several).
    pub timings: Vec<Timing>,
}

impl Served {
    /// Nothing run yet on `v`.
    pub fn on(v: &Arc<LoadedVersion>) -> Served {
        Served { v: v.clone(), outs: Vec::new(), timings: Vec::new() }
    }

    /// Runs items on the version (a rollout runs several rounds); `outs` become this round's,
    /// the timings of every round are kept.
    pub async fn run(&mut self, items: Vec<Vec<ItemTensor>>, deadline: Deadline) -> Result<(), ApiError> {
        let v = self.v.clone();
        self.run_on(&v.batcher, items, deadline).await
    }

    /// [`Served::run`] through another of the version's queues (its `[embedding]` queue).
    pub async fn run_on(
        &mut self,
        batcher: &crate::batching::Batcher,
        items: Vec<Vec<ItemTensor>>,
        deadline: Deadline,
    ) -> Result<(), ApiError> {
        let v = &self.v;
        self.outs = batcher.infer(items, deadline).await.map_err(|e| ApiError::from(e).for_model(v))?;
        self.timings.extend(self.outs.iter().map(|o| o.timing));
        Ok(())
    }

    /// The data of item `i`'s first output.
    pub fn first_output(&self, i: usize) -> &[f32] {
        &self.outs[i].outputs[0].data
    }

    /// The headers every inference answer carries (`x-model-name`, `x-model-version`, `Server-Timing`).
    pub fn headers(&self) -> HeaderMap {
        served_headers(&self.v, &self.timings)
    }

    /// A JSON answer with those headers.
    pub fn json<B: serde::Serialize>(&self, body: B) -> Response {
        (self.headers(), axum::Json(body)).into_response()
    }
}
