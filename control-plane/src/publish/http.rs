//! Publishing to a remote edge over HTTP: `POST /v1/admin/snapshot` (full snapshot) and
//! `POST /v1/admin/snapshot/delta`, flatbuffer bodies, `Authorization: Bearer <token>`.
//! Answers: `200 {"version":N,…}`, or `{"error":{"code","message","current_version"?}}`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use edgeprice_schemas::codec::{encode_delta, encode_snapshot, DeltaData, SnapshotData};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tracing::debug;

use super::{PublishError, Publisher};

/// Publishes to one remote edge. Owns a small single-threaded runtime, so it must be
/// called from a plain thread (the pipeline's), not from inside an async runtime.
#[derive(Debug)]
pub struct HttpPublisher {
    edge: SocketAddr,
    admin_token: String,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
}

#[derive(Deserialize)]
struct Applied {
    version: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    current_version: Option<u64>,
}

impl HttpPublisher {
    /// A publisher for the edge at `edge` (its admin listener) with its admin token.
    pub fn new(
        edge: SocketAddr,
        admin_token: impl Into<String>,
        timeout: Duration,
    ) -> Result<HttpPublisher, PublishError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PublishError::Unavailable(format!("cannot start a runtime: {e}")))?;
        Ok(HttpPublisher {
            edge,
            admin_token: admin_token.into(),
            timeout,
            runtime,
        })
    }

    fn post(&self, path: &str, body: Vec<u8>) -> Result<u64, PublishError> {
        let exchange = async {
            let stream = TcpStream::connect(self.edge)
                .await
                .map_err(|e| PublishError::Unavailable(format!("connect {}: {e}", self.edge)))?;
            let unavailable = |e: hyper::Error| PublishError::Unavailable(e.to_string());
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(unavailable)?;
            tokio::spawn(connection);
            let request = Request::post(path)
                .header(HOST, self.edge.to_string())
                .header(AUTHORIZATION, format!("Bearer {}", self.admin_token))
                .header(CONTENT_TYPE, "application/x-flatbuffers")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            let response = sender.send_request(request).await.map_err(unavailable)?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(unavailable)?;
            Ok::<_, PublishError>((status, body.to_bytes()))
        };
        let (status, body) = self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, exchange).await })
            .map_err(|_| {
                PublishError::Unavailable(format!("no answer within {:?}", self.timeout))
            })??;
        debug!(edge = %self.edge, path, status, "edge answered");
        if status == 200 {
            return serde_json::from_slice::<Applied>(&body)
                .map(|applied| applied.version)
                .map_err(|e| PublishError::Unavailable(format!("unreadable answer: {e}")));
        }
        let detail = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| ErrorDetail {
                code: format!("http_{status}"),
                message: String::from_utf8_lossy(&body).into_owned(),
                current_version: None,
            });
        Err(match (detail.code.as_str(), detail.current_version) {
            ("version_conflict", Some(current_version)) => {
                PublishError::VersionConflict { current_version }
            }
            ("stale_snapshot", Some(current_version)) => PublishError::Stale { current_version },
            ("no_base_snapshot", _) => PublishError::NoBase,
            _ if status >= 500 => {
                PublishError::Unavailable(format!("{status} {}: {}", detail.code, detail.message))
            }
            _ => PublishError::Rejected {
                status,
                code: detail.code,
                message: detail.message,
            },
        })
    }
}

impl Publisher for HttpPublisher {
    fn publish_snapshot(&self, snapshot: SnapshotData) -> Result<u64, PublishError> {
        self.post("/v1/admin/snapshot", encode_snapshot(&snapshot))
    }

    fn publish_delta(&self, delta: DeltaData) -> Result<u64, PublishError> {
        self.post("/v1/admin/snapshot/delta", encode_delta(&delta))
    }
}
