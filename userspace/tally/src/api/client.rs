//! A minimal HTTP/1.1 client for tallyd's Unix socket (one request per connection).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};

use super::{ApiError, ExitCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach tallyd at {path}: {source} (is tallyd running?)")]
    Unreachable { path: PathBuf, source: std::io::Error },
    #[error("permission denied on {path}: tallyd's API is root's only")]
    Denied { path: PathBuf },
    #[error("talking to tallyd: {0}")]
    Protocol(String),
    #[error("{}", .0.message)]
    Api(ApiError),
}

impl ClientError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ClientError::Unreachable { .. } => ExitCode::DaemonUnreachable,
            ClientError::Denied { .. } => ExitCode::PermissionDenied,
            ClientError::Protocol(_) => ExitCode::SystemError,
            ClientError::Api(e) => e.code,
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn put<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError> {
        let proto = |e: &dyn std::fmt::Display| ClientError::Protocol(e.to_string());
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied => ClientError::Denied {
                    path: self.socket.clone(),
                },
                _ => ClientError::Unreachable {
                    path: self.socket.clone(),
                    source,
                },
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| proto(&e))?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| proto(&e))?),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "tallyd")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|e| proto(&e))?;
        let response = sender.send_request(request).await.map_err(|e| proto(&e))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| proto(&e))?.to_bytes();
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| proto(&e))
        } else {
            let err: ApiError = serde_json::from_slice(&body).unwrap_or(ApiError {
                code: ExitCode::SystemError,
                message: String::from_utf8_lossy(&body).into_owned(),
            });
            Err(ClientError::Api(err))
        }
    }
}
