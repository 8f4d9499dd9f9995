//! The JobManager's side of a cluster: the TaskManagers that joined, and the deployment of an
//! attempt across them.
//!
//! [`ClusterJobManager`] accepts TaskManagers on the JobManager's endpoint, sends each the job's
//! arguments and admits it only when the job it built has the JobManager's fingerprint. The
//! JobManager actor (`runtime/job_manager.rs`) uses it where a local job uses its in-process
//! TaskManager: to deploy an attempt, to send subtasks their commands, to have acknowledged
//! state persisted, to stop an attempt and to end the job. Reports from the TaskManagers reach
//! the JobManager actor as the same `JobManagerMsg`s a local subtask sends; a TaskManager that
//! goes away (its connection closed or silent past the heartbeat timeout) is reported as
//! `TaskManagerLost`, which fails the subtasks it ran and restarts the job on what remains.
//!
//! A TaskManager that joins under the id of a member, from that member's data address, is the
//! same node restarted (no two live processes bind one UDP address): the old incarnation is
//! dropped at once (its connection closed, its loss reported) instead of refusing the new one
//! until the old one's heartbeats time out. Each member carries its incarnation (its
//! [`TaskManagerId`]), so the loss of an old incarnation never fails subtasks deployed on the
//! new one, and TaskManagers never reuse a connection to the old one. A node joining under a
//! member's id from another address is refused (two nodes configured with one id).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::{Notify, mpsc};

use super::{CONTROL_QUEUE_MAX, ClusterSettings};
use crate::checkpoint::restore_plan::SubtaskRestorePlan;
use crate::checkpoint::storage::CheckpointFolder;
use crate::checkpoint::{CheckpointId, JobId};
use crate::graph::{ExecutionGraph, Placement, SlotOffer, TaskManagerId};
use crate::metrics::SubtaskMetricsSnapshot;
use crate::net::control::{Command, SubtaskEvent, ToJobManager, ToTaskManager};
use crate::net::{FrameReader, FrameWriter, NetNode, PeerLink, Role};
use crate::rest::TaskManagerView;
use crate::runtime::protocol::JobManagerMsg;
use crate::runtime::registry::OperatorRegistry;

/// A TaskManager that joined.
struct Member {
    id: TaskManagerId,
    slots: u32,
    data_addr: SocketAddr,
    sender: mpsc::Sender<ToTaskManager>,
    link: PeerLink,
    /// Milliseconds since the JobManager started, at the last heartbeat.
    last_heartbeat_ms: u64,
}

/// What a TaskManager answered during a deployment or a restart.
#[derive(Debug)]
enum Reply {
    Deployed(u32, Result<(), String>),
    Wired(u32, Result<(), String>),
    AttemptStopped(u32),
    /// The TaskManager is gone.
    Lost(String),
}

/// Why a deployment did not happen.
#[derive(Debug)]
pub(crate) enum DeployFailure {
    /// A TaskManager was lost or failed during it: a restart may succeed.
    Retry(String),
    /// It cannot succeed (too few slots for too long, a subtask that cannot start).
    Fatal(String),
}

/// The TaskManagers of a cluster, from the JobManager's side.
pub(crate) struct ClusterJobManager {
    node: Arc<NetNode>,
    settings: ClusterSettings,
    args: Vec<String>,
    fingerprint: u64,
    registry: Arc<OperatorRegistry>,
    members: Mutex<BTreeMap<String, Member>>,
    changed: Notify,
    replies_in: mpsc::Sender<(String, Reply)>,
    replies: tokio::sync::Mutex<mpsc::Receiver<(String, Reply)>>,
    job_manager: OnceLock<ActorRef<JobManagerMsg>>,
    next_id: Mutex<u32>,
    started: tokio::time::Instant,
    /// The node of each subtask of the deployed attempt, and its incarnation.
    hosts: Mutex<Vec<(String, TaskManagerId)>>,
    /// Set once the job ended: TaskManagers leaving then are no loss.
    ended: std::sync::atomic::AtomicBool,
    /// The latest metrics the TaskManagers reported, by (vertex, subtask index).
    remote_metrics: Mutex<BTreeMap<(u32, u32), SubtaskMetricsSnapshot>>,
    /// The slots the deployed attempt uses, by TaskManager.
    slots_used: Mutex<BTreeMap<String, u32>>,
}

impl std::fmt::Debug for ClusterJobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterJobManager")
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl ClusterJobManager {
    /// Starts accepting TaskManagers on `node` for the job built with `args` (fingerprint
    /// `fingerprint`).
    pub(crate) fn start(
        node: Arc<NetNode>,
        settings: ClusterSettings,
        args: Vec<String>,
        fingerprint: u64,
        registry: Arc<OperatorRegistry>,
    ) -> Arc<Self> {
        let (replies_in, replies) = mpsc::channel(CONTROL_QUEUE_MAX);
        let hub = Arc::new(Self {
            node,
            settings,
            args,
            fingerprint,
            registry,
            members: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            replies_in,
            replies: tokio::sync::Mutex::new(replies),
            job_manager: OnceLock::new(),
            next_id: Mutex::new(0),
            started: tokio::time::Instant::now(),
            hosts: Mutex::new(Vec::new()),
            ended: std::sync::atomic::AtomicBool::new(false),
            remote_metrics: Mutex::new(BTreeMap::new()),
            slots_used: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(accept(Arc::clone(&hub)));
        hub
    }

    /// Where TaskManager reports go, once the JobManager actor exists.
    pub(crate) fn set_job_manager(&self, job_manager: ActorRef<JobManagerMsg>) {
        let _ = self.job_manager.set(job_manager);
    }

    fn members(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest metrics the TaskManagers reported, by (vertex, subtask index).
    pub(crate) fn remote_metrics(&self) -> BTreeMap<(u32, u32), SubtaskMetricsSnapshot> {
        self.remote_metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The TaskManagers that joined, for the status.
    pub(crate) fn task_manager_views(&self) -> Vec<TaskManagerView> {
        let used = self
            .slots_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ended = self.ended.load(std::sync::atomic::Ordering::Relaxed);
        self.members()
            .iter()
            .map(|(node, member)| TaskManagerView {
                id: node.clone(),
                host: member.data_addr.to_string(),
                slots: member.slots,
                slots_used: if ended {
                    0
                } else {
                    used.get(node).copied().unwrap_or(0)
                },
                last_heartbeat_ms: Some(member.last_heartbeat_ms),
            })
            .collect()
    }

    /// The node running subtask `index` of the deployed attempt.
    pub(crate) fn host_of(&self, index: usize) -> Option<String> {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .map(|(node, _)| node.clone())
    }

    /// Whether the deployed attempt runs a subtask on incarnation `incarnation` of `node`;
    /// the first such subtask.
    pub(crate) fn first_subtask_on(&self, node: &str, incarnation: u32) -> Option<usize> {
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .position(|(host, id)| host == node && id.0 == incarnation)
    }

    async fn send_to(&self, node: &str, message: ToTaskManager) -> bool {
        let sender = self.members().get(node).map(|m| m.sender.clone());
        match sender {
            Some(sender) => sender.send(message).await.is_ok(),
            None => false,
        }
    }

    async fn broadcast(&self, message: ToTaskManager) {
        let senders: Vec<_> = self.members().values().map(|m| m.sender.clone()).collect();
        for sender in senders {
            let _ = sender.send(message.clone()).await;
        }
    }

    /// Sends `command` to subtask `index` of `attempt`.
    pub(crate) async fn command(&self, attempt: u32, index: usize, command: Command) {
        if let Some(node) = self.host_of(index) {
            self.send_to(
                &node,
                ToTaskManager::Command {
                    attempt,
                    index: index as u32,
                    command,
                },
            )
            .await;
        }
    }

    /// Asks the node of subtask `index` to persist its acknowledged state; `false` when that
    /// node is gone (its loss fails the checkpoint through the restart it causes).
    pub(crate) async fn persist(
        &self,
        attempt: u32,
        index: usize,
        id: CheckpointId,
        folder: CheckpointFolder,
        file_name: String,
    ) -> bool {
        match self.host_of(index) {
            Some(node) => {
                self.send_to(
                    &node,
                    ToTaskManager::Persist {
                        attempt,
                        index: index as u32,
                        id,
                        folder,
                        file_name,
                    },
                )
                .await
            }
            None => false,
        }
    }

    /// Tells every TaskManager to stop `attempt`.
    pub(crate) async fn stop_attempt(&self, attempt: u32) {
        self.broadcast(ToTaskManager::StopAttempt { attempt }).await;
    }

    /// Waits until every TaskManager stopped `attempt` (or is gone), so that every report it
    /// sent before was handed to the JobManager actor.
    pub(crate) async fn wait_attempt_stopped(&self, attempt: u32) {
        let mut waiting: std::collections::BTreeSet<String> =
            self.members().keys().cloned().collect();
        let mut replies = self.replies.lock().await;
        let deadline = Duration::from_millis(self.settings.heartbeat_timeout_ms.max(1) * 6);
        while !waiting.is_empty() {
            match tokio::time::timeout(deadline, replies.recv()).await {
                Ok(Some((node, Reply::AttemptStopped(a)))) if a == attempt => {
                    waiting.remove(&node);
                }
                Ok(Some((node, Reply::Lost(_)))) => {
                    waiting.remove(&node);
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(?waiting, attempt, "task managers did not confirm the stop");
                    return;
                }
            }
        }
    }

    /// Tells every TaskManager the job ended, and waits (a little) until each closed its
    /// connection, so the message is not lost when this process exits right after.
    pub(crate) async fn job_ended(&self, status: String) {
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        self.broadcast(ToTaskManager::JobEnded { status }).await;
        let links: Vec<PeerLink> = self.members().values().map(|m| m.link.clone()).collect();
        for link in links {
            let _ = tokio::time::timeout(Duration::from_secs(2), link.closed()).await;
            link.close("job ended");
        }
        // No TaskManager joins a job that ended.
        self.node.close();
    }

    /// Places `graph` on the TaskManagers that joined, waiting for enough slots, and deploys,
    /// wires and starts attempt `attempt`.
    pub(crate) async fn deploy(
        &self,
        graph: &ExecutionGraph,
        attempt: u32,
        job_id: JobId,
        restored_from: Option<CheckpointId>,
        restore: Vec<Option<SubtaskRestorePlan>>,
    ) -> Result<(), DeployFailure> {
        let placement = self.wait_for_slots(graph).await?;
        let (hosts, peers) = {
            let members = self.members();
            let by_id: BTreeMap<TaskManagerId, &String> =
                members.iter().map(|(node, m)| (m.id, node)).collect();
            let hosts: Vec<(String, TaskManagerId)> = (0..graph.subtasks.len())
                .map(|index| {
                    placement
                        .slot_of(index)
                        .and_then(|slot| {
                            by_id
                                .get(&slot.task_manager)
                                .map(|node| ((*node).clone(), slot.task_manager))
                        })
                        .unwrap_or((String::new(), TaskManagerId(0)))
                })
                .collect();
            let peers: Vec<(String, SocketAddr, u32)> = members
                .iter()
                .map(|(node, m)| (node.clone(), m.data_addr, m.id.0))
                .collect();
            let mut slots: BTreeMap<String, std::collections::BTreeSet<u32>> = BTreeMap::new();
            for slot in placement.slots() {
                if let Some(node) = by_id.get(&slot.task_manager) {
                    slots.entry((*node).clone()).or_default().insert(slot.slot);
                }
            }
            *self.slots_used.lock().unwrap_or_else(|p| p.into_inner()) = slots
                .into_iter()
                .map(|(node, used)| (node, used.len() as u32))
                .collect();
            (hosts, peers)
        };
        let mut per_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (index, (host, _)) in hosts.iter().enumerate() {
            per_node.entry(host.clone()).or_default().push(index as u32);
        }
        *self.hosts.lock().unwrap_or_else(|p| p.into_inner()) = hosts.clone();
        let hosts: Vec<String> = hosts.into_iter().map(|(node, _)| node).collect();
        tracing::info!(
            attempt,
            "deploying {} subtasks on {}",
            hosts.len(),
            per_node
                .iter()
                .map(|(node, subtasks)| format!("{node} ({} subtasks)", subtasks.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut replies = self.replies.lock().await;
        // Answers left over from an earlier attempt mean nothing now.
        while replies.try_recv().is_ok() {}
        // Restore plans, not state: each TaskManager reads its subtasks' files by handle.
        for (index, plan) in restore.into_iter().enumerate() {
            let Some(plan) = plan else {
                continue;
            };
            let restore = ToTaskManager::Restore {
                attempt,
                index: index as u32,
                plan,
            };
            if !self.send_to(&hosts[index], restore).await {
                return Err(DeployFailure::Retry(format!(
                    "task manager '{}' left during deployment",
                    hosts[index]
                )));
            }
        }
        for (node, subtasks) in &per_node {
            let deploy = ToTaskManager::Deploy {
                attempt,
                job_id,
                restored_from,
                subtasks: subtasks.clone(),
                placement: hosts.clone(),
                peers: peers.clone(),
            };
            if !self.send_to(node, deploy).await {
                return Err(DeployFailure::Retry(format!(
                    "task manager '{node}' left during deployment"
                )));
            }
        }
        let nodes: Vec<String> = per_node.keys().cloned().collect();
        self.await_all(&mut replies, &nodes, attempt, |reply| match reply {
            Reply::Deployed(a, result) => Some((*a, result.clone())),
            _ => None,
        })
        .await?;
        for node in &nodes {
            self.send_to(node, ToTaskManager::Wire { attempt }).await;
        }
        self.await_all(&mut replies, &nodes, attempt, |reply| match reply {
            Reply::Wired(a, result) => Some((*a, result.clone())),
            _ => None,
        })
        .await?;
        for node in &nodes {
            self.send_to(node, ToTaskManager::Start { attempt }).await;
        }
        Ok(())
    }

    async fn await_all(
        &self,
        replies: &mut mpsc::Receiver<(String, Reply)>,
        nodes: &[String],
        attempt: u32,
        pick: impl Fn(&Reply) -> Option<(u32, Result<(), String>)>,
    ) -> Result<(), DeployFailure> {
        let mut waiting: std::collections::BTreeSet<&String> = nodes.iter().collect();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.deploy_timeout_ms);
        while !waiting.is_empty() {
            let next = tokio::time::timeout_at(deadline, replies.recv()).await;
            let (node, reply) = match next {
                Ok(Some(reply)) => reply,
                Ok(None) => return Err(DeployFailure::Fatal("the cluster stopped".to_string())),
                Err(_) => {
                    return Err(DeployFailure::Retry(format!(
                        "task managers {waiting:?} did not answer within {} ms",
                        self.settings.deploy_timeout_ms
                    )));
                }
            };
            if let Reply::Lost(reason) = &reply {
                if waiting.contains(&node) {
                    return Err(DeployFailure::Retry(format!(
                        "task manager '{node}' was lost during deployment: {reason}"
                    )));
                }
                continue;
            }
            if let Some((a, result)) = pick(&reply)
                && a == attempt
            {
                result.map_err(|error| {
                    DeployFailure::Retry(format!("task manager '{node}': {error}"))
                })?;
                waiting.remove(&node);
            }
        }
        Ok(())
    }

    /// Waits until the TaskManagers offer enough slots for `graph`, and places it on them.
    async fn wait_for_slots(&self, graph: &ExecutionGraph) -> Result<Placement, DeployFailure> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.slot_wait_timeout_ms);
        let mut told = None;
        loop {
            let changed = self.changed.notified();
            let offers: Vec<SlotOffer> = self
                .members()
                .values()
                .map(|m| SlotOffer {
                    task_manager: m.id,
                    slots: m.slots,
                })
                .collect();
            match Placement::place(graph, &offers) {
                Ok(placement) => return Ok(placement),
                Err(error) => {
                    let message = error.to_string();
                    if told.as_ref() != Some(&message) {
                        tracing::info!(
                            "waiting for task managers: {message}; start more with --taskmanager \
                             --join {}",
                            self.node
                                .local_addr()
                                .map(|a| a.to_string())
                                .unwrap_or_default()
                        );
                        told = Some(message.clone());
                    }
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Err(DeployFailure::Fatal(format!(
                            "{message}, and none joined within {} ms (slot wait timeout)",
                            self.settings.slot_wait_timeout_ms
                        )));
                    }
                }
            }
        }
    }
}

/// Accepts connections on the JobManager's endpoint until it closes. A peer that fails TLS or
/// the handshake, or sends garbage, is logged and forgotten; it never reaches the job.
async fn accept(hub: Arc<ClusterJobManager>) {
    while let Some(incoming) = hub.node.accept_incoming().await {
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            let from = incoming.remote_address();
            match incoming.handshake().await {
                Ok(peer) => admit(hub, peer).await,
                // TaskManagers rejoining while the endpoint closes after the job ended.
                Err(error) if hub.ended.load(std::sync::atomic::Ordering::Relaxed) => {
                    tracing::debug!(%from, %error, "refused a connection after the job ended");
                }
                Err(error) => tracing::warn!(%from, %error, "refused a connection"),
            }
        });
    }
}

/// Registers a TaskManager: its data address, the job's arguments out, its fingerprint in.
async fn admit(hub: Arc<ClusterJobManager>, peer: crate::net::Peer) {
    let Role::TaskManager { slots } = peer.hello().role else {
        peer.close("only task managers join a job manager");
        return;
    };
    let (hello, link, mut writer, mut reader) = peer.into_parts();
    let node = hello.node.clone();
    let register_timeout = Duration::from_millis(hub.settings.heartbeat_timeout_ms.max(1000));
    let data_addr = match tokio::time::timeout(
        register_timeout,
        reader.next_message::<ToJobManager>("registration"),
    )
    .await
    {
        Ok(Ok(Some(ToJobManager::Register { data_addr }))) => data_addr,
        Ok(Ok(other)) => {
            tracing::warn!(task_manager = %node, ?other, "refused: no registration");
            link.close("expected a registration");
            return;
        }
        Ok(Err(error)) => {
            tracing::warn!(task_manager = %node, %error, "refused");
            link.close("bad registration");
            return;
        }
        Err(_) => {
            tracing::warn!(task_manager = %node, "refused: no registration in time");
            link.close("no registration in time");
            return;
        }
    };
    // The same id from the same data address: the node restarted, and the member is its
    // old incarnation, gone (its address is taken by the new one).
    let restarted = {
        let mut members = hub.members();
        if members
            .get(&node)
            .is_some_and(|member| member.data_addr == data_addr)
        {
            members.remove(&node)
        } else {
            None
        }
    };
    if let Some(old) = restarted {
        let reason = format!("it restarted: a new incarnation joined from its address {data_addr}");
        tracing::info!(task_manager = %node, "{reason}; the old incarnation is dropped");
        old.link.close("replaced by a restarted incarnation");
        hub.report_lost(&node, old.id, reason).await;
    }
    if hub.members().contains_key(&node) {
        let reason = format!("node id '{node}' is already in use in this cluster");
        tracing::warn!(task_manager = %node, "refused: {reason}");
        let _ = writer
            .send_message("refusal", &ToTaskManager::Refused { reason })
            .await;
        link.close("duplicate node id");
        return;
    }
    if let Err(error) = writer
        .send_message(
            "job arguments",
            &ToTaskManager::Job {
                args: hub.args.clone(),
            },
        )
        .await
    {
        tracing::warn!(task_manager = %node, %error, "lost while joining");
        return;
    }
    // Building the job may take a while (it runs the application's code up to `execute`).
    let built = tokio::time::timeout(
        Duration::from_millis(hub.settings.deploy_timeout_ms),
        reader.next_message::<ToJobManager>("job fingerprint"),
    )
    .await;
    let refusal = match built {
        Ok(Ok(Some(ToJobManager::JobBuilt {
            fingerprint: Ok(theirs),
        }))) if theirs == hub.fingerprint => None,
        Ok(Ok(Some(ToJobManager::JobBuilt {
            fingerprint: Ok(theirs),
        }))) => Some(format!(
            "task manager '{node}' built job {theirs:016x}, the job manager built {:016x}: run \
             the same binary on every node",
            hub.fingerprint
        )),
        Ok(Ok(Some(ToJobManager::JobBuilt {
            fingerprint: Err(error),
        }))) => Some(format!(
            "task manager '{node}' could not build the job: {error}"
        )),
        Ok(Ok(other)) => Some(format!(
            "task manager '{node}' sent {other:?} instead of the job's fingerprint"
        )),
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!(
            "task manager '{node}' did not build the job within {} ms",
            hub.settings.deploy_timeout_ms
        )),
    };
    if let Some(reason) = refusal {
        tracing::warn!(task_manager = %node, "refused: {reason}");
        let _ = writer
            .send_message("refusal", &ToTaskManager::Refused { reason })
            .await;
        writer.finish();
        // Give the refusal a moment to arrive before the close frame.
        tokio::time::sleep(Duration::from_millis(100)).await;
        link.close("refused");
        return;
    }
    let (sender, outgoing) = mpsc::channel(CONTROL_QUEUE_MAX);
    let id = {
        let mut next = hub.next_id.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        TaskManagerId(*next)
    };
    let heartbeat_ms = hub.started.elapsed().as_millis() as u64;
    hub.members().insert(
        node.clone(),
        Member {
            id,
            slots,
            data_addr,
            sender,
            link: link.clone(),
            last_heartbeat_ms: heartbeat_ms,
        },
    );
    tracing::info!(task_manager = %node, slots, %data_addr, "task manager joined");
    hub.changed.notify_waiters();
    tokio::spawn(write_control(writer, outgoing, link.clone(), node.clone()));
    let reason = read_reports(&hub, &node, reader).await;
    // Only this incarnation: a restarted one under the same id replaced it already.
    let removed = {
        let mut members = hub.members();
        if members.get(&node).is_some_and(|member| member.id == id) {
            members.remove(&node)
        } else {
            None
        }
    }
    .is_some();
    link.close("lost");
    if removed && hub.ended.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(task_manager = %node, "task manager left after the job ended");
    } else if removed {
        tracing::warn!(task_manager = %node, "task manager lost: {reason}");
        hub.report_lost(&node, id, reason).await;
    }
}

impl ClusterJobManager {
    /// Reports incarnation `id` of TaskManager `node` lost: to a deployment waiting for it,
    /// and to the JobManager actor (which fails the subtasks it ran).
    async fn report_lost(&self, node: &str, id: TaskManagerId, reason: String) {
        let _ = self
            .replies_in
            .send((node.to_string(), Reply::Lost(reason.clone())))
            .await;
        if let Some(job_manager) = self.job_manager.get() {
            let _ = job_manager.send_message(JobManagerMsg::TaskManagerLost {
                node: node.to_string(),
                incarnation: id.0,
                reason,
            });
        }
        self.changed.notify_waiters();
    }
}

async fn write_control(
    mut writer: FrameWriter,
    mut outgoing: mpsc::Receiver<ToTaskManager>,
    link: PeerLink,
    node: String,
) {
    while let Some(message) = outgoing.recv().await {
        if let Err(error) = writer.send_message("control message", &message).await {
            tracing::warn!(task_manager = %node, %error, "cannot send to the task manager");
            link.close("control stream failed");
            return;
        }
    }
}

/// Hands a TaskManager's reports to the JobManager actor until the connection ends or the
/// TaskManager falls silent; returns why it ended.
///
/// Silence is timed here, from the last message (a heartbeat or any report), rather than left to
/// QUIC's idle timeout (set to the same length): the JobManager's own sends to a dead peer
/// restart QUIC's idle timer (RFC 9000, 10.1), which made a `kill -9` take the timeout plus up to
/// a checkpoint interval to notice.
async fn read_reports(hub: &ClusterJobManager, node: &str, mut reader: FrameReader) -> String {
    let timeout = Duration::from_millis(hub.settings.heartbeat_timeout_ms.max(1));
    loop {
        let next = tokio::time::timeout(
            timeout,
            reader.next_message::<ToJobManager>("control message"),
        );
        let message = match next.await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => return "it closed the control stream".to_string(),
            Ok(Err(error)) => return error.to_string(),
            Err(_) => {
                return format!(
                    "no heartbeat for {} ms (the heartbeat timeout)",
                    timeout.as_millis()
                );
            }
        };
        let forward = |message: JobManagerMsg| {
            if let Some(job_manager) = hub.job_manager.get() {
                let _ = job_manager.send_message(message);
            }
        };
        match message {
            ToJobManager::Metrics { subtasks } => {
                let mut remote = hub.remote_metrics.lock().unwrap_or_else(|p| p.into_inner());
                for snapshot in subtasks {
                    remote.insert((snapshot.vertex, snapshot.index), snapshot);
                }
            }
            ToJobManager::Heartbeat => {
                let now = hub.started.elapsed().as_millis() as u64;
                if let Some(member) = hub.members().get_mut(node) {
                    member.last_heartbeat_ms = now;
                }
            }
            ToJobManager::Deployed { attempt, result } => {
                let _ = hub
                    .replies_in
                    .send((node.to_string(), Reply::Deployed(attempt, result)))
                    .await;
            }
            ToJobManager::Wired { attempt, result } => {
                let _ = hub
                    .replies_in
                    .send((node.to_string(), Reply::Wired(attempt, result)))
                    .await;
            }
            ToJobManager::AttemptStopped { attempt } => {
                let _ = hub
                    .replies_in
                    .send((node.to_string(), Reply::AttemptStopped(attempt)))
                    .await;
            }
            ToJobManager::Collected { node: sink, items } => {
                match hub.registry.collectors().get(&sink) {
                    Some(collector) => {
                        if let Err(error) = collector.append_encoded(&items) {
                            return format!(
                                "sent collect sink elements that do not decode: {error}"
                            );
                        }
                    }
                    None => {
                        return format!("sent elements for node {}, not a collect sink", sink.0);
                    }
                }
            }
            ToJobManager::Subtask {
                attempt,
                index,
                event,
            } => {
                let index = index as usize;
                forward(match event {
                    SubtaskEvent::InputFinished => JobManagerMsg::InputFinished { attempt, index },
                    SubtaskEvent::Finished { metrics } => JobManagerMsg::SubtaskFinished {
                        attempt,
                        index,
                        metrics,
                    },
                    SubtaskEvent::Stopped => JobManagerMsg::SubtaskStopped { attempt, index },
                    SubtaskEvent::Failed {
                        operator,
                        task,
                        message,
                        recoverable,
                    } => JobManagerMsg::SubtaskFailed {
                        attempt,
                        index,
                        operator,
                        task,
                        message: format!("{message} (on task manager '{node}')"),
                        recoverable,
                    },
                    SubtaskEvent::Acknowledge { barrier } => JobManagerMsg::Acknowledge {
                        attempt,
                        index,
                        barrier,
                        snapshots: Vec::new(),
                    },
                    SubtaskEvent::Decline { id, reason } => JobManagerMsg::Decline {
                        attempt,
                        index,
                        id,
                        reason,
                    },
                    SubtaskEvent::Committed { commits } => {
                        JobManagerMsg::Committed { index, commits }
                    }
                    SubtaskEvent::Persisted { id, folder, result } => JobManagerMsg::Persisted {
                        attempt,
                        index,
                        id,
                        folder,
                        result,
                    },
                });
            }
            ToJobManager::Register { .. } | ToJobManager::JobBuilt { .. } => {
                return "sent a registration twice".to_string();
            }
        }
    }
}
