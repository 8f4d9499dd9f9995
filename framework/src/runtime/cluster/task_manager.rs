//! A TaskManager node: joins a JobManager, builds the job it is sent, and runs the subtasks it is
//! given, wired to local peers directly and to remote ones through the
//! channel proxies (`channels.rs`).
//!
//! The subtasks, the per-attempt `TaskManagerActor` that supervises them and the
//! `CheckpointWriter` are the same actors a local job uses. What differs is who they talk to:
//! their `JobManager` is the `JobManagerLink` on this node, which turns every report into a
//! control message, and keeps acknowledged snapshots here until the JobManager asks this node's
//! writer to persist them (so state never crosses the network; the acknowledgement carries the
//! barrier, the `Persisted` answer the state handle). A restore goes the other way by handle
//! too: the JobManager sends each subtask's restore plan (`Restore`), and the per-attempt
//! `TaskManagerActor` reads the files it names from the checkpoint directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};

use super::channels::{
    Blame, InputProxy, InputProxyArgs, OutputProxy, OutputProxyArgs, read_batches, read_credits,
};
use super::{COLLECT_CHUNK_BYTES, CONTROL_QUEUE_MAX, ClusterSettings};
use crate::checkpoint::restore_plan::SubtaskRestorePlan;
use crate::checkpoint::storage::CheckpointStore;
use crate::checkpoint::{CheckpointId, JobId};
use crate::error::JobError;
use crate::exchange::ChannelId;
use crate::graph::{ExecutionGraph, JobDescriptor};
use crate::net::control::{Command, SubtaskEvent, ToJobManager, ToTaskManager};
use crate::net::{FrameReader, FrameWriter, NetNode, PeerLink};
use crate::operator::PendingOperatorSnapshot;
use crate::runtime::RuntimeEnv;
use crate::runtime::checkpoint_writer::CheckpointWriter;
use crate::runtime::gauges::ChannelGauges;
use crate::runtime::protocol::{JobManagerMsg, SubtaskArgs, SubtaskMsg, TaskManagerMsg, WriterMsg};
use crate::runtime::registry::OperatorRegistry;
use crate::runtime::task_manager::{TaskManagerActor, TaskManagerArgs};

/// Snapshots acknowledged and not yet persisted, by (attempt, subtask, checkpoint).
type HeldSnapshots =
    Arc<Mutex<BTreeMap<(u32, usize, CheckpointId), Vec<(String, PendingOperatorSnapshot)>>>>;

/// Input streams this node expects from other nodes, by channel.
type ExpectedInputs = Arc<Mutex<Inbound>>;

/// Input streams this node expects from other nodes, by channel, and the readers of those
/// that arrived, by attempt.
#[derive(Default)]
struct Inbound {
    expected: BTreeMap<ChannelId, ExpectedInput>,
    readers: Vec<(u32, tokio::task::JoinHandle<()>)>,
}

/// Where the stream of a remote input channel goes once it arrives.
struct ExpectedInput {
    codec: crate::exchange::BatchCodec,
    consumer: ActorRef<SubtaskMsg>,
    consumer_input: usize,
    blame: Blame,
    /// The proxy that sends the channel's credits.
    writer: oneshot::Sender<FrameWriter>,
}

/// A TaskManager that joined a JobManager and received the job's arguments.
pub struct JoinedTaskManager {
    node: Arc<NetNode>,
    name: String,
    args: Vec<String>,
    to_job_manager: mpsc::Sender<ToJobManager>,
    inbox: mpsc::Receiver<ToTaskManager>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    settings: ClusterSettings,
    expected: ExpectedInputs,
    job_manager_addr: SocketAddr,
}

impl std::fmt::Debug for JoinedTaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinedTaskManager")
            .field("name", &self.name)
            .field("job_manager", &self.job_manager_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for JoinedTaskManager {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Why joining failed.
#[derive(Debug)]
pub enum JoinError {
    /// The JobManager could not be reached or the connection failed; retrying may help.
    Unreachable(String),
    /// The JobManager refused this node; the reason says why.
    Refused(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(what) => write!(f, "{what}"),
            Self::Refused(reason) => write!(f, "refused: {reason}"),
        }
    }
}

/// Joins the JobManager at `job_manager` from `node` (this TaskManager's endpoint, which also
/// accepts the data channels of other TaskManagers), advertising `data_addr`, and waits for the
/// job's arguments.
///
/// # Errors
///
/// The JobManager is unreachable or refused this node.
pub async fn join(
    node: Arc<NetNode>,
    job_manager: SocketAddr,
    data_addr: Option<SocketAddr>,
    settings: ClusterSettings,
) -> Result<JoinedTaskManager, JoinError> {
    let peer = node
        .connect(job_manager)
        .await
        .map_err(|error| match error {
            crate::net::NetError::Refused { reason, .. } => JoinError::Refused(reason),
            other => JoinError::Unreachable(other.to_string()),
        })?;
    let bound = node
        .local_addr()
        .map_err(|e| JoinError::Unreachable(e.to_string()))?;
    // A node bound to every interface advertises the address it reaches the JobManager from.
    let advertised = data_addr.unwrap_or_else(|| {
        if !bound.ip().is_unspecified() {
            return bound;
        }
        let ip = peer.local_ip().or_else(|| route_to(job_manager));
        SocketAddr::new(ip.unwrap_or(bound.ip()), bound.port())
    });
    let (_, link, mut writer, mut reader) = peer.into_parts();
    let unreachable = |e: crate::net::NetError| JoinError::Unreachable(e.to_string());
    writer
        .send_message(
            "register",
            &ToJobManager::Register {
                data_addr: advertised,
            },
        )
        .await
        .map_err(unreachable)?;
    let args = match reader
        .next_message::<ToTaskManager>("job arguments")
        .await
        .map_err(unreachable)?
    {
        Some(ToTaskManager::Job { args }) => args,
        Some(ToTaskManager::Refused { reason }) => return Err(JoinError::Refused(reason)),
        Some(other) => {
            return Err(JoinError::Unreachable(format!(
                "the JobManager sent {} before the job's arguments",
                message_name(&other)
            )));
        }
        None => {
            return Err(JoinError::Unreachable(
                "the JobManager closed the connection before sending the job".to_string(),
            ));
        }
    };
    let (to_job_manager, outgoing) = mpsc::channel(CONTROL_QUEUE_MAX);
    let (inbox_sender, inbox) = mpsc::channel(CONTROL_QUEUE_MAX);
    let expected: ExpectedInputs = Arc::default();
    let tasks = vec![
        tokio::spawn(write_control(writer, outgoing, link.clone())),
        tokio::spawn(read_control(reader, inbox_sender)),
        tokio::spawn(heartbeat(
            to_job_manager.clone(),
            settings.heartbeat_interval_ms,
        )),
        tokio::spawn(accept_data(Arc::clone(&node), Arc::clone(&expected))),
    ];
    let name = node.hello().node.clone();
    tracing::info!(task_manager = %name, %job_manager, data = %advertised, "joined the JobManager");
    Ok(JoinedTaskManager {
        node,
        name,
        args,
        to_job_manager,
        inbox,
        tasks,
        settings,
        expected,
        job_manager_addr: job_manager,
    })
}

/// The local address the operating system would send from to reach `peer`: a UDP socket
/// "connected" to it (no packet is sent) learns its source address from the routing table.
fn route_to(peer: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

fn message_name(message: &ToTaskManager) -> &'static str {
    match message {
        ToTaskManager::Job { .. } => "Job",
        ToTaskManager::Refused { .. } => "Refused",
        ToTaskManager::Restore { .. } => "Restore",
        ToTaskManager::Deploy { .. } => "Deploy",
        ToTaskManager::Wire { .. } => "Wire",
        ToTaskManager::Start { .. } => "Start",
        ToTaskManager::Command { .. } => "Command",
        ToTaskManager::Persist { .. } => "Persist",
        ToTaskManager::StopAttempt { .. } => "StopAttempt",
        ToTaskManager::JobEnded { .. } => "JobEnded",
    }
}

async fn write_control(
    mut writer: FrameWriter,
    mut outgoing: mpsc::Receiver<ToJobManager>,
    link: PeerLink,
) {
    while let Some(message) = outgoing.recv().await {
        if let Err(error) = writer.send_message("control message", &message).await {
            tracing::warn!(%error, "cannot send to the JobManager");
            link.close("control stream failed");
            return;
        }
    }
}

async fn read_control(mut reader: FrameReader, inbox: mpsc::Sender<ToTaskManager>) {
    loop {
        match reader
            .next_message::<ToTaskManager>("control message")
            .await
        {
            Ok(Some(message)) => {
                if inbox.send(message).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                tracing::warn!("the JobManager closed the control stream");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "lost the JobManager");
                return;
            }
        }
    }
}

async fn heartbeat(to_job_manager: mpsc::Sender<ToJobManager>, interval_ms: u64) {
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
    loop {
        ticker.tick().await;
        if to_job_manager.send(ToJobManager::Heartbeat).await.is_err() {
            return;
        }
    }
}

/// Accepts other TaskManagers' connections and hands each data stream to the proxy expecting
/// it. A stream nobody expects (an attempt that is gone) is dropped, which resets it.
async fn accept_data(node: Arc<NetNode>, expected: ExpectedInputs) {
    while let Some(incoming) = node.accept_incoming().await {
        let expected = Arc::clone(&expected);
        tokio::spawn(async move {
            let from = incoming.remote_address();
            let peer = match incoming.handshake().await {
                Ok(peer) => peer,
                Err(error) => {
                    tracing::warn!(%from, %error, "refused a connection");
                    return;
                }
            };
            let link = peer.link().clone();
            loop {
                match link.accept_channel().await {
                    Ok(Some((channel, writer, reader))) => {
                        let mut inbound = expected.lock().unwrap_or_else(|p| p.into_inner());
                        match inbound.expected.remove(&channel) {
                            Some(input) => {
                                let task = tokio::spawn(read_batches(
                                    reader,
                                    channel,
                                    input.codec,
                                    input.consumer,
                                    input.consumer_input,
                                    input.blame,
                                ));
                                inbound.readers.push((channel.attempt, task));
                                let _ = input.writer.send(writer);
                            }
                            None => tracing::debug!(
                                peer = link.node(),
                                attempt = channel.attempt,
                                channel = channel.channel,
                                "dropped a stream for a channel this node does not expect"
                            ),
                        }
                    }
                    Ok(None) => return,
                    Err(error) => {
                        tracing::debug!(peer = link.node(), %error, "data connection ended");
                        return;
                    }
                }
            }
        });
    }
}

impl JoinedTaskManager {
    /// The job's arguments, the program name first.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Tells the JobManager this node could not build the job (its error), so it is not
    /// waited for.
    pub async fn report_build_failure(&self, error: String) {
        let _ = self
            .to_job_manager
            .send(ToJobManager::JobBuilt {
                fingerprint: Err(error),
            })
            .await;
    }

    /// Serves the job built from [`args`](Self::args) until the JobManager says it ended or
    /// goes away: reports the job's fingerprint, then deploys, wires, starts and stops the
    /// subtasks it is told to.
    ///
    /// # Errors
    ///
    /// The JobManager refused the job (another fingerprint) or was lost.
    pub(crate) async fn serve(
        &mut self,
        descriptor: JobDescriptor,
        registry: OperatorRegistry,
        env: RuntimeEnv,
    ) -> Result<(), JobError> {
        let fingerprint = descriptor
            .fingerprint()
            .map_err(|e| JobError::Deploy(e.to_string()))?;
        self.to_job_manager
            .send(ToJobManager::JobBuilt {
                fingerprint: Ok(fingerprint.0),
            })
            .await
            .map_err(|_| lost())?;
        let (job_name, config, graph, _) = descriptor.into_parts();
        let metrics = crate::metrics::JobMetrics::for_graph(&graph, &self.name);
        let mut node = NodeRuntime {
            name: self.name.clone(),
            net: Arc::clone(&self.node),
            graph: Arc::new(graph),
            registry: Arc::new(registry),
            config,
            job_name,
            env,
            to_job_manager: self.to_job_manager.clone(),
            expected: Arc::clone(&self.expected),
            held: Arc::default(),
            link: None,
            writer: None,
            storage: None,
            attempts: BTreeMap::new(),
            restores: BTreeMap::new(),
            peers: BTreeMap::new(),
            settings: self.settings.clone(),
            sent_bytes: Arc::default(),
            metrics,
        };
        let mut report = tokio::time::interval(Duration::from_millis(
            self.settings.heartbeat_interval_ms.max(1),
        ));
        let outcome = loop {
            let received = tokio::select! {
                biased;
                received = self.inbox.recv() => received,
                _ = report.tick() => {
                    let subtasks: Vec<_> = node
                        .metrics
                        .snapshot_at(node.env.clock().now_ms())
                        .into_iter()
                        .filter(|s| node.is_deployed(s.vertex, s.index))
                        .collect();
                    if !subtasks.is_empty() {
                        node.send(ToJobManager::Metrics { subtasks }).await;
                    }
                    continue;
                }
            };
            let Some(message) = received else {
                break Err(lost());
            };
            match message {
                ToTaskManager::JobEnded { status } => {
                    tracing::info!(
                        task_manager = %self.name,
                        %status,
                        sent_bytes = node.sent_bytes.load(std::sync::atomic::Ordering::Relaxed),
                        "the job ended"
                    );
                    break Ok(());
                }
                ToTaskManager::Refused { reason } => {
                    break Err(JobError::Deploy(format!(
                        "the JobManager refused this TaskManager: {reason}"
                    )));
                }
                other => node.handle(other).await,
            }
        };
        node.shutdown().await;
        outcome
    }
}

fn lost() -> JobError {
    JobError::Internal("lost the JobManager".to_string())
}

/// One attempt's actors on this node.
struct AttemptActors {
    task_manager: ActorRef<TaskManagerMsg>,
    /// Local subtasks by flat index.
    subtasks: BTreeMap<usize, ActorRef<SubtaskMsg>>,
    /// Every subtask's node, by flat index.
    placement: Vec<String>,
    /// The data address and incarnation of every node.
    peers: BTreeMap<String, (SocketAddr, u32)>,
    /// The channels to open towards other nodes when told to wire.
    outputs: Vec<RemoteOutput>,
    proxies: Vec<ActorRef<SubtaskMsg>>,
    /// The credit readers of the opened output channels.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// A channel from a local producer to a subtask on another node, before its stream is open.
struct RemoteOutput {
    id: ChannelId,
    /// The consumer's node.
    node: String,
    producer: ActorRef<SubtaskMsg>,
    producer_output: usize,
    blame: Blame,
    /// The proxy that sends the channel's batches.
    writer: oneshot::Sender<FrameWriter>,
}

/// The job's runtime on this node.
struct NodeRuntime {
    name: String,
    net: Arc<NetNode>,
    graph: Arc<ExecutionGraph>,
    registry: Arc<OperatorRegistry>,
    config: crate::api::ExecutionConfig,
    job_name: String,
    env: RuntimeEnv,
    to_job_manager: mpsc::Sender<ToJobManager>,
    expected: ExpectedInputs,
    held: HeldSnapshots,
    link: Option<ActorRef<JobManagerMsg>>,
    writer: Option<ActorRef<WriterMsg>>,
    storage: Option<Arc<dyn CheckpointStore>>,
    attempts: BTreeMap<u32, AttemptActors>,
    /// Restore plans received for the next deployment, by (attempt, subtask); bounded by the
    /// job's subtasks (older attempts' are dropped at each deployment).
    restores: BTreeMap<(u32, usize), SubtaskRestorePlan>,
    /// Connections to other TaskManagers, by node id, with the incarnation connected to.
    peers: BTreeMap<String, (u32, PeerLink)>,
    settings: ClusterSettings,
    /// Bytes the data channels of this node sent during the job.
    sent_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// The live metrics of the subtasks running here (kept on this node for now).
    metrics: crate::metrics::JobMetrics,
}

impl NodeRuntime {
    async fn handle(&mut self, message: ToTaskManager) {
        match message {
            ToTaskManager::Restore {
                attempt,
                index,
                plan,
            } => {
                self.restores.insert((attempt, index as usize), plan);
            }
            ToTaskManager::Deploy {
                attempt,
                job_id,
                restored_from,
                subtasks,
                placement,
                peers,
            } => {
                let result = self
                    .deploy(attempt, job_id, restored_from, subtasks, placement, peers)
                    .await;
                if let Err(error) = &result {
                    tracing::warn!(task_manager = %self.name, attempt, %error, "deployment failed");
                }
                self.send(ToJobManager::Deployed { attempt, result }).await;
            }
            ToTaskManager::Wire { attempt } => {
                let result = self.wire(attempt).await;
                self.send(ToJobManager::Wired { attempt, result }).await;
            }
            ToTaskManager::Start { attempt } => {
                if let Some(actors) = self.attempts.get(&attempt) {
                    for subtask in actors.subtasks.values() {
                        let _ = subtask.send_message(SubtaskMsg::Start);
                    }
                }
            }
            ToTaskManager::Command {
                attempt,
                index,
                command,
            } => {
                if let Some(subtask) = self
                    .attempts
                    .get(&attempt)
                    .and_then(|a| a.subtasks.get(&(index as usize)))
                {
                    let message = match command {
                        Command::TriggerCheckpoint(barrier) => {
                            SubtaskMsg::TriggerCheckpoint(barrier)
                        }
                        Command::FinalCheckpoint { barrier, persist } => {
                            SubtaskMsg::FinalCheckpoint { barrier, persist }
                        }
                        Command::CheckpointComplete { id, is_final } => {
                            SubtaskMsg::CheckpointComplete { id, is_final }
                        }
                        Command::Stop => SubtaskMsg::Stop,
                    };
                    let _ = subtask.send_message(message);
                }
            }
            ToTaskManager::Persist {
                attempt,
                index,
                id,
                folder,
                file_name,
            } => {
                let index = index as usize;
                let snapshots = self
                    .held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(attempt, index, id));
                let sent = match (snapshots, &self.writer) {
                    (Some(snapshots), Some(writer)) => writer
                        .send_message(WriterMsg::Persist {
                            attempt,
                            index,
                            id,
                            folder: folder.clone(),
                            file_name,
                            snapshots,
                        })
                        .map_err(|_| "the checkpoint writer stopped".to_string()),
                    (None, _) => Err(format!(
                        "no snapshot of subtask {index} for checkpoint {} is held here",
                        id.0
                    )),
                    (_, None) => Err("no checkpoint writer".to_string()),
                };
                if let Err(error) = sent {
                    self.send(ToJobManager::Subtask {
                        attempt,
                        index: index as u32,
                        event: SubtaskEvent::Persisted {
                            id,
                            folder,
                            result: Err(error),
                        },
                    })
                    .await;
                }
            }
            ToTaskManager::StopAttempt { attempt } => {
                self.stop_attempt(attempt).await;
                // Every report the attempt's subtasks sent is forwarded before this answer.
                if let Some(link) = &self.link {
                    let (done, flushed) = oneshot::channel();
                    if link.send_message(JobManagerMsg::Sync(done)).is_ok() {
                        let _ = flushed.await;
                    }
                }
                self.send(ToJobManager::AttemptStopped { attempt }).await;
            }
            ToTaskManager::Job { .. } => {
                tracing::warn!(task_manager = %self.name, "ignored a second job while running one");
            }
            ToTaskManager::JobEnded { .. } | ToTaskManager::Refused { .. } => {}
        }
    }

    /// Whether subtask `index` of vertex `vertex` runs here in some attempt.
    fn is_deployed(&self, vertex: u32, index: u32) -> bool {
        self.attempts.values().any(|actors| {
            actors.subtasks.keys().any(|&flat| {
                let id = self.graph.subtasks[flat].id;
                id.vertex == vertex && id.index == index
            })
        })
    }

    async fn send(&self, message: ToJobManager) {
        let _ = self.to_job_manager.send(message).await;
    }

    /// The link, writer and storage of the run `job_id`, started on the first deployment.
    async fn ensure_run(&mut self, job_id: JobId) -> Result<ActorRef<JobManagerMsg>, String> {
        if let Some(link) = &self.link {
            return Ok(link.clone());
        }
        let (link, _) = Actor::spawn(
            None,
            JobManagerLink,
            LinkArgs {
                to_job_manager: self.to_job_manager.clone(),
                held: Arc::clone(&self.held),
                registry: Arc::clone(&self.registry),
            },
        )
        .await
        .map_err(|e| format!("cannot start the JobManager link: {e}"))?;
        let run_dir = self
            .config
            .checkpointing
            .directory
            .as_ref()
            .map(|dir| dir.join(job_id.to_string()));
        let storage = self
            .env
            .checkpoint_stores()
            .open_run(job_id, run_dir.as_deref());
        let (writer, _) = Actor::spawn(
            None,
            CheckpointWriter,
            (Arc::clone(&storage), self.env.clone(), link.clone()),
        )
        .await
        .map_err(|e| format!("cannot start the checkpoint writer: {e}"))?;
        self.link = Some(link.clone());
        self.writer = Some(writer);
        self.storage = Some(storage);
        Ok(link)
    }

    async fn deploy(
        &mut self,
        attempt: u32,
        job_id: JobId,
        restored_from: Option<CheckpointId>,
        subtasks: Vec<u32>,
        placement: Vec<String>,
        peers: Vec<(String, SocketAddr, u32)>,
    ) -> Result<(), String> {
        if placement.len() != self.graph.subtasks.len() {
            return Err(format!(
                "the placement names {} subtasks, the job built here has {}",
                placement.len(),
                self.graph.subtasks.len()
            ));
        }
        let link = self.ensure_run(job_id).await?;
        let storage = self
            .storage
            .clone()
            .ok_or_else(|| "no checkpoint storage on this task manager".to_string())?;
        let (task_manager, _) = Actor::spawn(
            None,
            TaskManagerActor,
            TaskManagerArgs {
                job_manager: link.clone(),
                attempt,
                env: self.env.clone(),
                storage,
            },
        )
        .await
        .map_err(|e| format!("cannot start the task manager actor: {e}"))?;
        let local_root = self
            .config
            .local_state_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!(
                "eichhorn-{}-{}-{job_id}-attempt-{attempt}",
                std::process::id(),
                self.name
            ));
        let gauges = Arc::new(ChannelGauges::new(self.graph.channel_count));
        let mut specs = Vec::with_capacity(subtasks.len());
        for &index in &subtasks {
            let index = index as usize;
            if index >= self.graph.subtasks.len() {
                task_manager.stop(None);
                return Err(format!("subtask {index} is not in the job built here"));
            }
            specs.push(SubtaskArgs {
                graph: Arc::clone(&self.graph),
                registry: Arc::clone(&self.registry),
                index,
                config: self.config.clone(),
                job_name: self.job_name.clone(),
                attempt_number: attempt,
                job_id,
                job_manager: link.clone(),
                gauges: Arc::clone(&gauges),
                clock: Arc::clone(self.env.clock()),
                restore: self.restores.remove(&(attempt, index)),
                restored: Ok(BTreeMap::new()),
                restored_from,
                local_dir: local_root.join(format!("subtask-{index}")),
                faults: self.env.fault_injector().cloned(),
                metrics: Arc::clone(&self.metrics.subtasks()[index]),
            });
        }
        self.restores.retain(|(a, _), _| *a > attempt);
        let refs = match ractor::call!(task_manager, TaskManagerMsg::Deploy, specs) {
            Ok(Ok(refs)) => refs,
            Ok(Err(message)) => {
                task_manager.stop(None);
                return Err(message);
            }
            Err(error) => {
                task_manager.stop(None);
                return Err(format!("task manager actor unavailable: {error}"));
            }
        };
        let local: BTreeMap<usize, ActorRef<SubtaskMsg>> =
            subtasks.iter().map(|&i| i as usize).zip(refs).collect();
        let mut actors = AttemptActors {
            task_manager,
            subtasks: local,
            placement,
            peers: peers
                .into_iter()
                .map(|(node, addr, incarnation)| (node, (addr, incarnation)))
                .collect(),
            outputs: Vec::new(),
            proxies: Vec::new(),
            readers: Vec::new(),
        };
        if let Err(error) = self.make_proxies(attempt, &mut actors, &link).await {
            self.attempts.insert(attempt, actors);
            self.stop_attempt(attempt).await;
            return Err(error);
        }
        self.attempts.insert(attempt, actors);
        Ok(())
    }

    /// Spawns a proxy for every channel between a local subtask and a remote one, registers the
    /// input streams this node expects and wires the local subtasks.
    async fn make_proxies(
        &mut self,
        attempt: u32,
        actors: &mut AttemptActors,
        link: &ActorRef<JobManagerMsg>,
    ) -> Result<(), String> {
        let here = &self.name;
        let mut wiring = Vec::new();
        for (&index, subtask) in &actors.subtasks {
            let plan = &self.graph.subtasks[index];
            let blame = Blame {
                job_manager: link.clone(),
                attempt,
                index,
            };
            let mut outputs = Vec::with_capacity(plan.outputs.len());
            for (output, channel) in plan.outputs.iter().enumerate() {
                if actors.placement[channel.consumer] == *here {
                    let consumer = actors.subtasks.get(&channel.consumer).ok_or_else(|| {
                        format!(
                            "subtask {} is placed here but not deployed",
                            channel.consumer
                        )
                    })?;
                    outputs.push((consumer.clone(), channel.consumer_input));
                    continue;
                }
                let id = ChannelId {
                    attempt,
                    channel: channel.channel as u32,
                };
                let codec = self
                    .registry
                    .output_codec(&self.graph, index, output)
                    .map_err(|e| e.to_string())?;
                let (stream_sender, stream) = oneshot::channel();
                let (proxy, _) = Actor::spawn(
                    None,
                    OutputProxy,
                    OutputProxyArgs {
                        channel: id,
                        codec,
                        stream,
                        blame: blame.clone(),
                        sent_bytes: Arc::clone(&self.sent_bytes),
                    },
                )
                .await
                .map_err(|e| format!("cannot start a channel proxy: {e}"))?;
                actors.outputs.push(RemoteOutput {
                    id,
                    node: actors.placement[channel.consumer].clone(),
                    producer: subtask.clone(),
                    producer_output: output,
                    blame: blame.clone(),
                    writer: stream_sender,
                });
                actors.proxies.push(proxy.clone());
                outputs.push((proxy, channel.consumer_input));
            }
            let mut inputs = Vec::with_capacity(plan.inputs.len());
            for channel in &plan.inputs {
                if actors.placement[channel.producer] == *here {
                    let producer = actors.subtasks.get(&channel.producer).ok_or_else(|| {
                        format!(
                            "subtask {} is placed here but not deployed",
                            channel.producer
                        )
                    })?;
                    inputs.push((producer.clone(), channel.producer_output));
                    continue;
                }
                let id = ChannelId {
                    attempt,
                    channel: channel.channel as u32,
                };
                let codec = self
                    .registry
                    .output_codec(&self.graph, channel.producer, channel.producer_output)
                    .map_err(|e| e.to_string())?;
                let (stream_sender, stream) = oneshot::channel();
                self.expected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .expected
                    .insert(
                        id,
                        ExpectedInput {
                            codec,
                            consumer: subtask.clone(),
                            consumer_input: inputs.len(),
                            blame: blame.clone(),
                            writer: stream_sender,
                        },
                    );
                let (proxy, _) = Actor::spawn(
                    None,
                    InputProxy,
                    InputProxyArgs {
                        channel: id,
                        stream,
                        blame: blame.clone(),
                    },
                )
                .await
                .map_err(|e| format!("cannot start a channel proxy: {e}"))?;
                actors.proxies.push(proxy.clone());
                inputs.push((proxy, channel.producer_output));
            }
            wiring.push((subtask.clone(), outputs, inputs));
        }
        for (subtask, outputs, inputs) in wiring {
            subtask
                .send_message(SubtaskMsg::Wire { outputs, inputs })
                .map_err(|e| format!("cannot wire a subtask: {e}"))?;
        }
        Ok(())
    }

    /// Opens the stream of every channel leaving a local subtask for another node.
    async fn wire(&mut self, attempt: u32) -> Result<(), String> {
        let Some(actors) = self.attempts.get_mut(&attempt) else {
            return Err(format!("attempt {attempt} is not deployed here"));
        };
        let outputs = std::mem::take(&mut actors.outputs);
        let peers = actors.peers.clone();
        let mut readers = Vec::with_capacity(outputs.len());
        for output in outputs {
            let RemoteOutput {
                id,
                node,
                producer,
                producer_output,
                blame,
                writer,
            } = output;
            let (addr, incarnation) = *peers
                .get(&node)
                .ok_or_else(|| format!("no address for task manager '{node}'"))?;
            // A connection to an earlier incarnation of the node (it restarted since) leads
            // nowhere: close it rather than open streams into it.
            if let Some((cached, link)) = self.peers.get(&node)
                && *cached != incarnation
            {
                link.close("the task manager restarted");
                self.peers.remove(&node);
            }
            let link = match self.peers.get(&node) {
                Some((_, link)) => link.clone(),
                None => {
                    let peer = tokio::time::timeout(
                        Duration::from_millis(self.settings.heartbeat_timeout_ms),
                        self.net.connect(addr),
                    )
                    .await
                    .map_err(|_| format!("task manager '{node}' at {addr} did not answer"))?
                    .map_err(|e| format!("cannot reach task manager '{node}': {e}"))?;
                    let link = peer.link().clone();
                    self.peers.insert(node.clone(), (incarnation, link.clone()));
                    link
                }
            };
            let (stream_writer, stream_reader) = match link.open_channel(id).await {
                Ok(opened) => opened,
                Err(error) => {
                    // A cached connection may have died with its node; forget it.
                    self.peers.remove(&node);
                    return Err(format!(
                        "cannot open channel {} to task manager '{node}': {error}",
                        id.channel
                    ));
                }
            };
            readers.push(tokio::spawn(read_credits(
                stream_reader,
                id,
                producer,
                producer_output,
                blame,
            )));
            let _ = writer.send(stream_writer);
        }
        if let Some(actors) = self.attempts.get_mut(&attempt) {
            actors.readers.extend(readers);
        }
        Ok(())
    }

    async fn stop_attempt(&mut self, attempt: u32) {
        let Some(actors) = self.attempts.remove(&attempt) else {
            return;
        };
        let _ = actors
            .task_manager
            .get_cell()
            .stop_and_wait(
                Some("attempt stopped".to_string()),
                Some(Duration::from_secs(60)),
            )
            .await;
        for proxy in actors.proxies {
            proxy.kill();
        }
        for reader in actors.readers {
            reader.abort();
        }
        let mut inbound = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        inbound.expected.retain(|id, _| id.attempt != attempt);
        inbound.readers.retain(|(a, task)| {
            if *a == attempt {
                task.abort();
            }
            *a != attempt
        });
        drop(inbound);
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(a, _, _), _| *a != attempt);
    }

    async fn shutdown(&mut self) {
        let attempts: Vec<u32> = self.attempts.keys().copied().collect();
        for attempt in attempts {
            self.stop_attempt(attempt).await;
        }
        if let Some(link) = &self.link {
            let (done, flushed) = oneshot::channel();
            if link.send_message(JobManagerMsg::Sync(done)).is_ok() {
                let _ = flushed.await;
            }
        }
        if let Some(writer) = self.writer.take() {
            writer.stop(None);
        }
        if let Some(link) = self.link.take() {
            link.stop(None);
        }
        for (_, link) in std::mem::take(&mut self.peers).into_values() {
            link.close("job ended");
        }
        self.storage = None;
    }
}

/// A node whose serving is cancelled (its task dropped mid-job, as when the process is killed)
/// takes its actors with it: every attempt's supervisor is killed (and with it, by ractor's
/// supervision tree, its subtasks), and so are the channel proxies, the checkpoint writer and
/// the JobManager link; nothing is flushed or acknowledged. After `NodeRuntime::shutdown`
/// there is nothing left to kill.
impl Drop for NodeRuntime {
    fn drop(&mut self) {
        for actors in std::mem::take(&mut self.attempts).into_values() {
            actors.task_manager.kill();
            for subtask in actors.subtasks.values() {
                subtask.kill();
            }
            for proxy in actors.proxies {
                proxy.kill();
            }
            for reader in actors.readers {
                reader.abort();
            }
        }
        let mut inbound = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        for (_, task) in inbound.readers.drain(..) {
            task.abort();
        }
        drop(inbound);
        if let Some(writer) = self.writer.take() {
            writer.kill();
        }
        if let Some(link) = self.link.take() {
            link.kill();
        }
    }
}

/// Stands in for the JobManager on a TaskManager node: turns every report of the local
/// subtasks, their supervisor and the checkpoint writer into a control message.
struct JobManagerLink;

struct LinkArgs {
    to_job_manager: mpsc::Sender<ToJobManager>,
    held: HeldSnapshots,
    registry: Arc<OperatorRegistry>,
}

impl Actor for JobManagerLink {
    type Msg = JobManagerMsg;
    type State = LinkArgs;
    type Arguments = LinkArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<JobManagerMsg>,
        args: LinkArgs,
    ) -> Result<LinkArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<JobManagerMsg>,
        message: JobManagerMsg,
        state: &mut LinkArgs,
    ) -> Result<(), ActorProcessingErr> {
        let event = |attempt: u32, index: usize, event: SubtaskEvent| ToJobManager::Subtask {
            attempt,
            index: index as u32,
            event,
        };
        let message = match message {
            JobManagerMsg::InputFinished { attempt, index } => {
                event(attempt, index, SubtaskEvent::InputFinished)
            }
            JobManagerMsg::SubtaskFinished {
                attempt,
                index,
                metrics,
            } => {
                // What this node's collect sinks received goes to the JobManager's handles
                // before the subtask counts as finished, so the job's result has it all.
                for (&node, collector) in state.registry.collectors() {
                    match collector.drain_encoded(COLLECT_CHUNK_BYTES) {
                        Ok(chunks) => {
                            for items in chunks {
                                let _ = state
                                    .to_job_manager
                                    .send(ToJobManager::Collected { node, items })
                                    .await;
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot send a collect sink's elements");
                        }
                    }
                }
                event(attempt, index, SubtaskEvent::Finished { metrics })
            }
            JobManagerMsg::SubtaskStopped { attempt, index } => {
                event(attempt, index, SubtaskEvent::Stopped)
            }
            JobManagerMsg::SubtaskFailed {
                attempt,
                index,
                operator,
                task,
                message,
                recoverable,
            } => event(
                attempt,
                index,
                SubtaskEvent::Failed {
                    operator,
                    task,
                    message,
                    recoverable,
                },
            ),
            JobManagerMsg::Acknowledge {
                attempt,
                index,
                barrier,
                snapshots,
            } => {
                state
                    .held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((attempt, index, barrier.id), snapshots);
                event(attempt, index, SubtaskEvent::Acknowledge { barrier })
            }
            JobManagerMsg::Decline {
                attempt,
                index,
                id,
                reason,
            } => event(attempt, index, SubtaskEvent::Decline { id, reason }),
            JobManagerMsg::Persisted {
                attempt,
                index,
                id,
                folder,
                result,
            } => event(
                attempt,
                index,
                SubtaskEvent::Persisted {
                    id,
                    folder,
                    result: result.map_err(|e| e.to_string()),
                },
            ),
            // Commits are output whoever made them; the JobManager takes them from any
            // attempt, so the attempt field is not read.
            JobManagerMsg::Committed { index, commits } => {
                event(0, index, SubtaskEvent::Committed { commits })
            }
            JobManagerMsg::Sync(done) => {
                let _ = done.send(());
                return Ok(());
            }
            _ => return Ok(()),
        };
        let _ = state.to_job_manager.send(message).await;
        Ok(())
    }
}
