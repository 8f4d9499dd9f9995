//! Running an application on a cluster: the same binary as JobManager or TaskManager.
//!
//! Rust cannot ship code to another process, so every node runs the user's application binary,
//! and every node builds the job by running the application's own code with the same
//! arguments. [`run_application`] wraps an application's entry point:
//!
//! - **locally** (no role flag) it just runs it;
//! - as **JobManager** (`--jobmanager --bind ADDR`) it runs it too, and the application's
//!   [`StreamEnv::execute`](crate::api::StreamEnv::execute) deploys the job on the TaskManagers
//!   that joined instead of in this process; what the application does with the result (print
//!   it, write a file from a collect sink) happens here, as in a local run;
//! - as **TaskManager** (`--taskmanager --join ADDR --slots N`) it joins the JobManager,
//!   receives the job's arguments, runs the application with them up to `execute`, which
//!   serves the subtasks placed here until the job ends; the application's code after
//!   `execute` never runs on a TaskManager. Then it waits for the next job.
//!
//! Code before `execute` therefore runs on every node (keep it free of side effects a second
//! run would repeat, or make them idempotent); code after it runs only where a local run would.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use eichhorn::prelude::*;
//!
//! #[tokio::main]
//! async fn main() -> ExitCode {
//!     eichhorn::cluster::run_application(|args: Vec<String>| async move {
//!         let parallelism = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(1);
//!         let env = StreamEnv::new();
//!         env.set_parallelism(parallelism);
//!         let counts = env.from_collection((0..100u64).collect()).collect_sink();
//!         match env.execute("numbers").await {
//!             Ok(_) => {
//!                 println!("{} numbers", counts.take().len());
//!                 ExitCode::SUCCESS
//!             }
//!             Err(error) => {
//!                 eprintln!("error: {error}");
//!                 ExitCode::FAILURE
//!             }
//!         }
//!     })
//!     .await
//! }
//! ```
//!
//! The cluster directory (`--cluster-dir`, default `./.eichhorn-cluster`) holds the cluster's
//! certificate authority: the JobManager creates it on its first start, every node issues its
//! own certificate from it, and a node without it cannot connect (mutual TLS). Copy it to a
//! machine to let that machine join.

pub mod cli;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

pub use crate::runtime::cluster::ClusterSettings;
pub use crate::runtime::cluster::task_manager::{JoinError, JoinedTaskManager};
pub use cli::{JobManagerOptions, Launch, TaskManagerOptions, UsageError};

use crate::error::JobError;
use crate::graph::JobDescriptor;
use crate::net::{ClusterCa, Hello, NetNode, Role};
use crate::runtime::registry::OperatorRegistry;
use crate::runtime::{JobHandle, RuntimeEnv};

/// What `execute` does in this task: deploy on a cluster, or serve a TaskManager's share.
pub(crate) enum ClusterRole {
    /// This process is the JobManager.
    JobManager {
        /// Its endpoint, which TaskManagers join.
        node: Arc<NetNode>,
        /// Timing.
        settings: ClusterSettings,
        /// The arguments TaskManagers build the job with.
        task_manager_args: Vec<String>,
    },
    /// This process is a TaskManager that joined and builds the job.
    TaskManager {
        /// The session with the JobManager, taken by `execute`.
        joined: Mutex<Option<JoinedTaskManager>>,
        /// Signalled once the job this TaskManager served ended.
        served: tokio::sync::Notify,
    },
}

tokio::task_local! {
    static ROLE: Arc<ClusterRole>;
}

/// The role of the current task, if it runs inside [`run_application`] on a cluster.
pub(crate) fn current_role() -> Option<Arc<ClusterRole>> {
    ROLE.try_with(Arc::clone).ok()
}

impl ClusterRole {
    /// `execute` on a cluster: the JobManager deploys the job; a TaskManager serves its share
    /// and never returns (its application is dropped once the job ended).
    pub(crate) async fn execute(
        &self,
        descriptor: JobDescriptor,
        registry: OperatorRegistry,
        env: RuntimeEnv,
        publish: crate::runtime::StatusPublisher,
    ) -> Result<JobHandle, JobError> {
        match self {
            Self::JobManager {
                node,
                settings,
                task_manager_args,
            } => {
                crate::runtime::launch_on_cluster(
                    descriptor,
                    registry,
                    env,
                    Arc::clone(node),
                    settings.clone(),
                    task_manager_args.clone(),
                    publish,
                )
                .await
            }
            Self::TaskManager { joined, served } => {
                let Some(mut session) = joined.lock().await.take() else {
                    return Err(JobError::Deploy(
                        "a task manager runs one job per session; the application executed a \
                         second one"
                            .to_string(),
                    ));
                };
                let outcome = session.serve(descriptor, registry, env).await;
                if let Err(error) = &outcome {
                    tracing::warn!(%error, "the job on this task manager ended");
                }
                drop(session);
                served.notify_one();
                std::future::pending().await
            }
        }
    }
}

/// Runs `app`, an application's entry point taking its arguments (the program name first),
/// locally, as a cluster's JobManager or as a TaskManager, as the process's command line says
/// (see [`cli`]). Returns the process's exit code: `app`'s own, 2 for a usage error, 1 when a
/// TaskManager cannot start.
pub async fn run_application<F, Fut>(app: F) -> ExitCode
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    match cli::parse(std::env::args().collect()) {
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Ok(Launch::Local(args)) => app(args).await,
        Ok(Launch::JobManager(options)) => run_job_manager(options, app).await,
        Ok(Launch::TaskManager(options)) => run_task_manager(options, app).await,
    }
}

/// Runs `app` as the JobManager described by `options`.
pub async fn run_job_manager<F, Fut>(options: JobManagerOptions, app: F) -> ExitCode
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    let node = match job_manager_node(&options) {
        Ok(node) => node,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    as_job_manager(
        Arc::new(node),
        options.settings.clone(),
        options.task_manager_args.clone(),
        app(options.job_args.clone()),
    )
    .await
}

/// Runs `application` (an application's code, up to and after its `execute`) as the
/// JobManager on `node`: its [`StreamEnv::execute`](crate::api::StreamEnv::execute) deploys on
/// the TaskManagers that join `node`, which receive `task_manager_args` to build the same job.
/// Closes `node` when `application` ends and returns what it returned.
///
/// [`run_job_manager`] calls this with an endpoint bound on a UDP port; a caller that builds
/// its own endpoint (a simulation, on a simulated network) calls it directly.
pub async fn as_job_manager<Fut: Future>(
    node: Arc<NetNode>,
    settings: ClusterSettings,
    task_manager_args: Vec<String>,
    application: Fut,
) -> Fut::Output {
    let role = Arc::new(ClusterRole::JobManager {
        node: Arc::clone(&node),
        settings,
        task_manager_args,
    });
    let output = ROLE.scope(role, application).await;
    node.close();
    output
}

/// How one session of a TaskManager ([`serve_one_job`]) ended.
#[derive(Debug)]
pub enum Served<T> {
    /// The job this TaskManager served ended (the JobManager said so or was lost).
    Job,
    /// The application ended before executing the job (it failed while building it); the
    /// JobManager was told. What it returned.
    ApplicationEnded(T),
}

/// One session of a TaskManager on `node`: joins the JobManager at `job_manager`, runs `app`
/// with the job's arguments up to its `execute`, which serves the subtasks placed on this node
/// until the job ends.
///
/// [`run_task_manager`] calls this in a loop (joining again after each job) with an endpoint
/// bound on a UDP port; a caller that builds its own endpoint (a simulation) calls it directly.
///
/// # Errors
///
/// The JobManager is unreachable or refused this node.
pub async fn serve_one_job<F, Fut>(
    node: Arc<NetNode>,
    job_manager: std::net::SocketAddr,
    settings: ClusterSettings,
    app: F,
) -> Result<Served<Fut::Output>, JoinError>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future,
    Fut::Output: std::fmt::Debug,
{
    let session =
        crate::runtime::cluster::task_manager::join(node, job_manager, None, settings).await?;
    let args = session.args().to_vec();
    let role = Arc::new(ClusterRole::TaskManager {
        joined: Mutex::new(Some(session)),
        served: tokio::sync::Notify::new(),
    });
    let ClusterRole::TaskManager { served, .. } = role.as_ref() else {
        unreachable!("made as a task manager above");
    };
    let served = served.notified();
    let application = ROLE.scope(Arc::clone(&role), app(args));
    tokio::select! {
        biased;
        () = served => Ok(Served::Job),
        output = application => {
            // The application ended without serving: it failed before `execute`.
            if let ClusterRole::TaskManager { joined, .. } = role.as_ref()
                && let Some(session) = joined.lock().await.take()
            {
                session
                    .report_build_failure(format!(
                        "the application ended ({output:?}) before executing the job"
                    ))
                    .await;
            }
            Ok(Served::ApplicationEnded(output))
        }
    }
}

fn job_manager_node(options: &JobManagerOptions) -> Result<NetNode, crate::net::NetError> {
    let ca = ClusterCa::load_or_create(&options.cluster_dir)?;
    let identity = ca.issue("jobmanager")?;
    NetNode::bind(
        options.bind,
        &identity,
        Hello::new("jobmanager", Role::JobManager),
        options.settings.transport(),
    )
}

/// Runs a TaskManager: joins the JobManager (retrying with backoff while it is not there),
/// serves each job it is sent by running `app` with the job's arguments, and joins again after
/// each job, until SIGTERM or Ctrl-C.
pub async fn run_task_manager<F, Fut>(options: TaskManagerOptions, app: F) -> ExitCode
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    let node_id = options.node_id.clone().unwrap_or_else(default_node_id);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut node: Option<Arc<NetNode>> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let ready = match &node {
            Some(node) => Ok(Arc::clone(node)),
            None => task_manager_node(&options, &node_id).map(Arc::new),
        };
        let endpoint = match ready {
            Ok(endpoint) => {
                node = Some(Arc::clone(&endpoint));
                endpoint
            }
            Err(error) => {
                tracing::warn!(
                    task_manager = %node_id,
                    "cannot start: {error}; retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::select! {
                    biased;
                    () = &mut stop => return ExitCode::SUCCESS,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let session = async {
            let address = tokio::net::lookup_host(options.join.as_str())
                .await
                .ok()
                .and_then(|mut addresses| addresses.next())
                .ok_or_else(|| {
                    JoinError::Unreachable(format!("cannot resolve '{}'", options.join))
                })?;
            serve_one_job(
                Arc::clone(&endpoint),
                address,
                options.settings.clone(),
                &app,
            )
            .await
        };
        let served = tokio::select! {
            biased;
            () = &mut stop => {
                tracing::info!(task_manager = %node_id, "stopping");
                return ExitCode::SUCCESS;
            }
            served = session => served,
        };
        match served {
            Ok(Served::Job) => backoff = Duration::from_millis(100),
            Ok(Served::ApplicationEnded(_)) => {
                backoff = Duration::from_millis(100);
                tokio::time::sleep(backoff).await;
            }
            Err(error) => {
                tracing::warn!(
                    task_manager = %node_id,
                    job_manager = %options.join,
                    "cannot join: {error}; retrying in {} ms",
                    backoff.as_millis()
                );
                tokio::select! {
                    biased;
                    () = &mut stop => return ExitCode::SUCCESS,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn task_manager_node(
    options: &TaskManagerOptions,
    node_id: &str,
) -> Result<NetNode, crate::net::NetError> {
    let ca = ClusterCa::load(&options.cluster_dir)?;
    let identity = ca.issue(node_id)?;
    NetNode::bind(
        options.bind,
        &identity,
        Hello::new(
            node_id,
            Role::TaskManager {
                slots: options.slots,
            },
        ),
        options.settings.transport(),
    )
}

/// `taskmanager-<host>-<pid>`: unique on a machine, readable in logs.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("taskmanager-{host}-{}", std::process::id())
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    biased;
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
