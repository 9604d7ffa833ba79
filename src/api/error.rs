//! The one error type of the API, and the extractors and the safety net
//! that make every rejection (axum's own included) an RFC 9457 problem
//! document.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::json;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An API error as a problem document.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) title: &'static str,
    pub(super) detail: String,
    pub(super) field: Option<String>,
    /// Every problem, when there are several (a batch of alerts).
    pub(super) errors: Option<serde_json::Value>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        title: &'static str,
        detail: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            title,
            detail: detail.into(),
            field: None,
            errors: None,
        }
    }

    pub(crate) fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Invalid request",
            detail: detail.into(),
            field: Some(field.to_string()),
            errors: None,
        }
    }

    pub(crate) fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
    }

    /// List every problem of a batch in `errors`.
    pub(super) fn with_errors(mut self, errors: serde_json::Value) -> ApiError {
        self.errors = Some(errors);
        self
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "the request could not be completed",
        )
    }

    pub(super) fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// A status produced outside the handlers (an axum extractor or
    /// layer). Client errors keep axum's description, which is about the
    /// request; server errors say nothing more.
    fn from_status(status: StatusCode, text: String) -> ApiError {
        let title = status.canonical_reason().unwrap_or("Error");
        if status.is_server_error() {
            tracing::error!(%status, detail = %text, "internal error");
            return ApiError::new(status, title, "the request could not be completed");
        }
        let detail = if text.trim().is_empty() {
            title.to_string()
        } else {
            text.chars().take(300).collect()
        };
        ApiError::new(status, title, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(f) = self.field {
            body["field"] = json!(f);
            body["errors"] = json!([{"field": f, "detail": self.detail}]);
        }
        if let Some(e) = self.errors {
            body["errors"] = e;
        }
        let mut r = (self.status, Json(body)).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        ApiError::from_status(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::from_status(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::from_status(r.status(), r.body_text())
    }
}

/// The request body; its rejection (413, a broken stream) is an
/// [`ApiError`].
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(RawBody(Bytes::from_request(req, state).await?))
    }
}

/// `axum::extract::Path` whose rejection is an [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}

/// `axum::extract::Query` whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

/// The unknown route.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found", "no such endpoint")
}

/// The outermost layer: an error response that is not already a problem
/// document (an extractor rejection someone forgot to wrap, a 405 from
/// the method router, a layer's own answer) becomes one, so a client
/// never has to parse two error formats. A handler's own JSON document
/// (`/readyz` saying what is not ready) is an answer, not a rejection, and
/// passes untouched.
pub async fn problem_net(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes() == PROBLEM_JSON.as_bytes() || v.as_bytes().starts_with(b"application/json")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    // Those bodies are axum's short plain-text descriptions.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut out = ApiError::from_status(status, text).into_response();
    // Keep what the status needs, e.g. `Allow` on a 405.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Read the whole body before the handler runs, within the body timeout
/// and the size limit. A client that sends its body slowly (or not at
/// all) gets 408 and its connection closed, instead of holding a handler
/// and a connection slot for as long as it likes; a per-chunk timeout
/// would not stop one that drips a byte just inside it.
pub async fn read_body(
    limit: usize,
    timeout: std::time::Duration,
    req: Request,
    next: Next,
) -> Response {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::too_large(limit).into_response();
    }
    let collect = async {
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    "the request body could not be read",
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(ApiError::too_large(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    let buf = match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => {
            let mut r = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout",
                format!(
                    "the request body did not arrive within {}",
                    crate::util::format_duration(timeout)
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    next.run(Request::from_parts(parts, Body::from(buf))).await
}
