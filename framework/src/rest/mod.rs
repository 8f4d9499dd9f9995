//! The REST server: job status, checkpoints, exceptions, TaskManagers, Prometheus metrics and
//! the web dashboard, on one HTTP port (Flink's port 8081).
//!
//! ## Design
//!
//! - The server reads jobs only through [`JobStatusSource`]: a [`JobView`] (plain serde data
//!   the job's runner publishes, with live metrics from [`crate::metrics`]) and three commands
//!   (cancel, savepoint, stop with savepoint). It never reaches into actors, so the local
//!   JobManager and the cluster JobManager serve the same answers.
//! - HTTP is hyper's HTTP/1 server on the job's tokio runtime; routing is a `match` on the
//!   method and path segments (a handful of routes need no framework). Prometheus' text format
//!   is written by `prometheus-client` from a collector that walks the views in a fixed order.
//! - The dashboard is three static files compiled into the binary (`include_str!`): no CDN, no
//!   internet at run time. It polls `GET /jobs/<id>` once a second and draws the job graph,
//!   sparklines, watermarks, checkpoints, exceptions and TaskManagers.
//! - Bounded: jobs per server ([`JOBS_MAX`]), connections ([`CONNECTIONS_MAX`]), request bodies
//!   ([`REQUEST_BODY_BYTES_MAX`]), checkpoint history ([`CHECKPOINT_HISTORY_MAX`]), exceptions
//!   ([`EXCEPTIONS_MAX`]).
//!
//! ## Routes
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the dashboard |
//! | `GET /jobs` | `{"jobs": [overview, ...]}` |
//! | `GET /jobs/<id>` | [`JobView`]: status, vertices with metrics and subtasks, edges, checkpoints, exceptions, TaskManagers |
//! | `GET /jobs/<id>/checkpoints`, `/exceptions`, `/vertices`, `/vertices/<n>` | parts of it |
//! | `GET /taskmanagers` | the TaskManagers with their slots |
//! | `GET /metrics` | Prometheus text exposition |
//! | `POST /jobs/<id>/cancel` | cancels (202) |
//! | `POST /jobs/<id>/savepoints` `{"target-directory": d, "cancel-job": b}` | waits for the savepoint, answers `{"location": ...}` |
//! | `POST /jobs/<id>/stop` `{"target-directory": d}` | stop with savepoint |
//!
//! Errors are `{"errors": ["what went wrong"]}` with a 4xx status.

mod dashboard;
mod prometheus;
mod server;
mod view;

pub use prometheus::encode as encode_prometheus;
pub(crate) use server::RestRegistrar;
pub use server::{CONNECTIONS_MAX, JOBS_MAX, REQUEST_BODY_BYTES_MAX, RestError, RestServer};
pub use view::{
    BoxFuture, CHECKPOINT_HISTORY_MAX, CheckpointStatus, CheckpointType, CheckpointView,
    CheckpointsView, EXCEPTIONS_MAX, EdgeView, ExceptionView, JobOverview, JobState,
    JobStatusSource, JobView, SubtaskView, TaskManagerView, VertexMetrics, VertexView,
};
