//! The HTTP server: hyper's HTTP/1 connection handling on tokio, a small router, JSON answers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use super::view::{JobOverview, JobStatusSource};
use super::{dashboard, prometheus};

/// Jobs one server lists; registering more forgets the oldest job that ended (or, if none
/// ended, the oldest).
pub const JOBS_MAX: usize = 64;

/// Connections served at once; more wait in the listen backlog.
pub const CONNECTIONS_MAX: usize = 64;

/// The largest request body accepted (the JSON of a savepoint request).
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;

/// Errors of the REST server.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The address could not be bound.
    #[error("cannot serve REST on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

type Jobs = Arc<Mutex<Vec<Arc<dyn JobStatusSource>>>>;

/// The REST server: `GET /jobs`, `GET /jobs/<id>`, `GET /metrics`, the `POST` commands and the
/// dashboard at `/`, for every job registered with it. Dropping it (or
/// [`RestServer::shutdown`]) stops serving.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::rest::RestServer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = RestServer::bind("127.0.0.1:0").await?;
/// let env = StreamEnv::new();
/// env.set_rest_server(&server);
/// env.from_collection(vec![1u32, 2, 3]).map(|x| x * 2).collect_sink();
/// env.execute("doubling").await?;
/// // The server still answers about the finished job.
/// assert_eq!(server.jobs()[0].view().state, eichhorn::rest::JobState::Finished);
/// println!("dashboard at http://{}/", server.local_addr());
/// # Ok(()) }
/// ```
pub struct RestServer {
    addr: SocketAddr,
    jobs: Jobs,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl RestServer {
    /// Binds `addr` (port 0 picks a free port: read it back with
    /// [`RestServer::local_addr`]) and starts serving on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub async fn bind(
        addr: impl tokio::net::ToSocketAddrs + std::fmt::Debug,
    ) -> Result<Self, RestError> {
        let shown = format!("{addr:?}");
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RestError::Bind {
                addr: shown.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| RestError::Bind {
            addr: shown,
            source,
        })?;
        let jobs: Jobs = Arc::default();
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&jobs), stopped));
        tracing::info!("REST server and dashboard on http://{addr}/");
        Ok(Self {
            addr,
            jobs,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `job` from now on.
    pub fn register(&self, job: Arc<dyn JobStatusSource>) {
        self.registrar().register(job);
    }

    /// A handle that registers jobs with this server (kept by a `StreamEnv`).
    pub(crate) fn registrar(&self) -> RestRegistrar {
        RestRegistrar(Arc::clone(&self.jobs))
    }

    /// The jobs served, in registration order.
    pub fn jobs(&self) -> Vec<Arc<dyn JobStatusSource>> {
        lock(&self.jobs).clone()
    }

    /// Stops serving and waits until the server's connections are closed.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Registers jobs with a [`RestServer`] without owning it.
#[derive(Clone)]
pub(crate) struct RestRegistrar(Jobs);

impl std::fmt::Debug for RestRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestRegistrar")
    }
}

impl RestRegistrar {
    /// Serves `job` from now on.
    pub(crate) fn register(&self, job: Arc<dyn JobStatusSource>) {
        let mut jobs = lock(&self.0);
        if jobs.len() == JOBS_MAX {
            let oldest_ended = jobs.iter().position(|j| j.view().state.is_terminal());
            jobs.remove(oldest_ended.unwrap_or(0));
        }
        jobs.push(job);
    }
}

fn lock(jobs: &Jobs) -> std::sync::MutexGuard<'_, Vec<Arc<dyn JobStatusSource>>> {
    // The list is only ever pushed to or removed from whole: a poisoned lock holds a whole list.
    jobs.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts connections until `stopped`, each served on its own task (at most
/// [`CONNECTIONS_MAX`] at once); at the end every connection is closed.
async fn serve(listener: TcpListener, jobs: Jobs, mut stopped: oneshot::Receiver<()>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut stopped => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set stays bounded by the permits.
        while connections.try_join_next().is_some() {}
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!("REST accept failed: {error}");
                continue;
            }
        };
        let jobs = Arc::clone(&jobs);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let jobs = Arc::clone(&jobs);
                async move { Ok::<_, std::convert::Infallible>(route(request, &jobs).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!("REST connection ended: {error}");
            }
            drop(permit);
        });
    }
    connections.shutdown().await;
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => answer(status, "application/json", body),
        Err(error) => error_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {error}"),
        ),
    }
}

#[derive(Serialize)]
struct ErrorBody {
    errors: Vec<String>,
}

/// An error answer in Flink's shape: `{"errors": ["..."]}`.
fn error_answer(status: StatusCode, message: String) -> Answer {
    json(
        status,
        &ErrorBody {
            errors: vec![message],
        },
    )
}

#[derive(Serialize)]
struct JobsBody {
    jobs: Vec<JobOverview>,
}

/// The body of `POST /jobs/<id>/savepoints` and `POST /jobs/<id>/stop` (Flink's field names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavepointRequest {
    #[serde(rename = "target-directory")]
    target_directory: PathBuf,
    #[serde(rename = "cancel-job", default)]
    cancel_job: bool,
}

#[derive(Serialize)]
struct SavepointBody {
    location: String,
}

async fn route(request: Request<Incoming>, jobs: &Jobs) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let find = |id: &str| lock(jobs).iter().find(|j| j.id() == id).cloned();
    match (&method, segments.as_slice()) {
        (&Method::GET, []) => answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            dashboard::INDEX_HTML,
        ),
        (&Method::GET, ["dashboard", "app.js"]) => answer(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            dashboard::APP_JS,
        ),
        (&Method::GET, ["dashboard", "style.css"]) => answer(
            StatusCode::OK,
            "text/css; charset=utf-8",
            dashboard::STYLE_CSS,
        ),
        (&Method::GET, ["metrics"]) => {
            let views = lock(jobs).iter().map(|j| j.view()).collect();
            answer(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus::encode(views),
            )
        }
        (&Method::GET, ["jobs"]) => {
            let body = JobsBody {
                jobs: lock(jobs).iter().map(|j| j.view().overview()).collect(),
            };
            json(StatusCode::OK, &body)
        }
        (&Method::GET, ["taskmanagers"]) => {
            let mut managers = Vec::new();
            for job in lock(jobs).iter() {
                for tm in job.view().task_managers {
                    if !managers.contains(&tm) {
                        managers.push(tm);
                    }
                }
            }
            json(StatusCode::OK, &managers)
        }
        (&Method::GET, ["jobs", id, rest @ ..]) => {
            let Some(job) = find(id) else {
                return not_found(&path);
            };
            let view = job.view();
            match rest {
                [] => json(StatusCode::OK, &view),
                ["checkpoints"] => json(StatusCode::OK, &view.checkpoints),
                ["exceptions"] => json(StatusCode::OK, &view.exceptions),
                ["vertices"] => json(StatusCode::OK, &view.vertices),
                ["vertices", vertex] => {
                    match view.vertices.iter().find(|v| vertex.parse() == Ok(v.id)) {
                        Some(v) => json(StatusCode::OK, v),
                        None => not_found(&path),
                    }
                }
                _ => not_found(&path),
            }
        }
        (&Method::POST, ["jobs", id, command]) => {
            let Some(job) = find(id) else {
                return not_found(&path);
            };
            match *command {
                "cancel" => match job.cancel() {
                    Ok(()) => json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({ "status": "cancelling" }),
                    ),
                    Err(message) => error_answer(StatusCode::CONFLICT, message),
                },
                "savepoints" | "stop" => {
                    let body = match read_body(request).await {
                        Ok(body) => body,
                        Err(answer) => return answer,
                    };
                    let parsed: SavepointRequest = match serde_json::from_slice(&body) {
                        Ok(parsed) => parsed,
                        Err(error) => {
                            return error_answer(
                                StatusCode::BAD_REQUEST,
                                format!(
                                    "the body of POST {path} must be JSON like \
                                     {{\"target-directory\": \"/savepoints\", \"cancel-job\": false}}: {error}"
                                ),
                            );
                        }
                    };
                    let stop = *command == "stop" || parsed.cancel_job;
                    match job.savepoint(parsed.target_directory, stop).await {
                        Ok(location) => json(
                            StatusCode::OK,
                            &SavepointBody {
                                location: location.display().to_string(),
                            },
                        ),
                        Err(message) => error_answer(StatusCode::CONFLICT, message),
                    }
                }
                _ => not_found(&path),
            }
        }
        (_, ["jobs", ..] | ["metrics"] | ["taskmanagers"] | [] | ["dashboard", ..]) => {
            error_answer(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not supported on {path}"),
            )
        }
        _ => not_found(&path),
    }
}

fn not_found(path: &str) -> Answer {
    error_answer(StatusCode::NOT_FOUND, format!("nothing at {path}"))
}

/// The request's body, at most [`REQUEST_BODY_BYTES_MAX`] bytes.
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Answer> {
    match Limited::new(request.into_body(), REQUEST_BODY_BYTES_MAX)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(error_answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body could not be read (at most {REQUEST_BODY_BYTES_MAX} bytes): {error}"
            ),
        )),
    }
}
