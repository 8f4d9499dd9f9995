//! Multi-node runs: a JobManager and N TaskManagers in one process, on one paused
//! current-thread tokio runtime, talking real QUIC with real TLS over the simulated network.
//!
//! ## Design
//!
//! Every node is what `eichhorn::cluster` makes of an application process, minus the process:
//!
//! - the **JobManager** runs the job-building function and its `execute` inside
//!   [`eichhorn::cluster::as_job_manager`], on an endpoint [`sim_node`] built on a simulated
//!   socket: the production `ClusterJobManager` admits TaskManagers, places subtasks on their
//!   slots, deploys, checkpoints and restarts;
//! - each **TaskManager** loops over [`eichhorn::cluster::serve_one_job`] (as
//!   `run_task_manager` does): it joins over QUIC, builds the job with the same function and
//!   serves the subtasks placed on it, wired to other TaskManagers by QUIC data streams. Each
//!   node has its own [`RuntimeEnv`] (its seed, its host id, its clock) and shares the
//!   simulation's checkpoint stores and fault injector, as nodes share a checkpoint directory.
//!
//! The TaskManagers are not spawned: their futures are polled by the driver, inside the
//! `block_on` of the run, after the JobManager's and the fault timer's (a `biased` select, so
//! the order is fixed). Their subtasks are ractor actors spawned on the same runtime. So a
//! **node crash** is dropping the node's future: the framework's TaskManager then kills its
//! actors (subtasks, checkpoint writer, link, proxies) without a word to anyone, and the
//! simulator unbinds the node's address, so nothing it left behind can send a datagram. A
//! replacement TaskManager joins at once on a new address. A **partition** cuts one node off
//! from every address bound at that time until it heals. **Packet faults** are the network's
//! per-datagram loss, duplication, corruption, jitter and spikes ([`SimNetwork`]).
//!
//! The same seed gives the same run: every node's randomness is seeded ([`sim_node`]), the
//! runtime is single-threaded with paused time, and the network hashes every datagram it
//! delivers (`ClusterRun::network_trace`).
//!
//! ## Invariants
//!
//! - Node faults happen in the order of their times; a fault names its node modulo the
//!   TaskManagers alive at that time, in the order they joined.
//! - After the JobManager's job ended, the TaskManagers are driven until each ended its
//!   session (they hear the end and shut their subtasks down, and join no more), for at most
//!   [`GRACE`] more virtual time; then every node is dropped.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use eichhorn::StableHasher;
use eichhorn::api::{CollectSink, Data, StreamEnv};
use eichhorn::checkpoint::storage::{
    CheckpointFolder, CheckpointMetadata, CheckpointStore, CheckpointStoreProvider, FileMetadata,
    StandardCheckpointStores, StorageError,
};
use eichhorn::checkpoint::{CheckpointId, JobId, RestartStrategy};
use eichhorn::cluster::{ClusterSettings, Served};
use eichhorn::net::{ClusterCa, Hello, NetError, NetNode, NodeIdentity, Role};
use eichhorn::runtime::{HostId, RuntimeEnv};
use eichhorn::{JobError, JobResult};

use crate::engine::{SkewedClock, trace_hash};
use crate::faults::{Fault, FaultyStores, PlannedFailures};
use crate::network::{LinkFaults, NetworkStats, SimNetwork};
use crate::quic::{Remembered, derive, input_key, sim_node};
use crate::{CommittedOutput, FaultPlan, SimulatedRun, Simulation, SimulationError, fingerprint};

/// Virtual time the TaskManagers are driven after the job ended.
pub const GRACE: Duration = Duration::from_secs(1);

/// The JobManager's address on the simulated network.
const JOB_MANAGER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    6123,
);

/// The timing of a simulated cluster: heartbeats every 100 ms, a node lost after 1 s of
/// silence (virtual time: a short timeout costs nothing and finds more interleavings).
pub fn settings() -> ClusterSettings {
    ClusterSettings {
        heartbeat_interval_ms: 100,
        heartbeat_timeout_ms: 1_000,
        slot_wait_timeout_ms: 60_000,
        deploy_timeout_ms: 30_000,
    }
}

/// The address of the `index`th TaskManager to join (replacements get new ones).
fn task_manager_addr(index: usize) -> SocketAddr {
    let high = u8::try_from(index / 250).unwrap_or(u8::MAX);
    let low = (index % 250) as u8;
    SocketAddr::from(([10, 0, 1 + high, 1 + low], 6124))
}

/// The seed of node `index` (0 is the JobManager).
fn node_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The identity of node `name` with a key from `seed`, issued by `ca` (made from `ca_seed`):
/// remembered per process (a check issues the same certificates in each of its three runs).
fn node_identity(
    ca: &ClusterCa,
    ca_seed: [u8; 32],
    name: &str,
    seed: [u8; 32],
) -> Result<NodeIdentity, NetError> {
    static ISSUED: Remembered<NodeIdentity> = Remembered::new();
    ISSUED.try_get_or(input_key(0, &[&ca_seed, name.as_bytes(), &seed]), || {
        ca.issue_from_seed(name, seed)
    })
}

/// The seed of incarnation `incarnation` of a node whose first incarnation has `seed`: a
/// restarted process draws other random numbers (connection ids, keys, its certificate's key).
fn incarnation_seed(seed: u64, incarnation: u32) -> u64 {
    if incarnation == 0 {
        seed
    } else {
        eichhorn::state::splitmix64(
            seed ^ u64::from(incarnation).wrapping_mul(0xD1B5_4A32_D192_ED03),
        )
    }
}

/// How every node of a run sets up its job, besides building it.
pub(crate) struct NodeSetup<'a> {
    /// Configures the job the same way on every node (seed, job id, restarts, checkpoint
    /// directory): the JobManager admits a TaskManager only when their jobs' fingerprints
    /// match.
    pub(crate) configure: &'a dyn Fn(&StreamEnv),
    /// The node's runtime environment from its seeded base: the shared fault injector and
    /// checkpoint stores, the node's clock.
    pub(crate) runtime: &'a dyn Fn(RuntimeEnv) -> RuntimeEnv,
}

/// The checkpoint directory every node of a simulated cluster configures. Nothing is written
/// there: [`SharedStores`] keeps the checkpoints in memory, one store per run that every node
/// opens, as nodes reach one shared directory, and names its folders under this path (a
/// cluster's JobManager accepts only folders with a path). A fixed path keeps the job's
/// configuration, and every message naming a checkpoint folder, the same from run to run and
/// from process to process.
pub const CHECKPOINT_DIR: &str = "/eichhorn-sim/checkpoints";

/// The checkpoint storage of a simulated cluster: every node opening run `job_id` gets the same
/// memory store under the run's virtual directory (what a shared directory is to processes on
/// several machines).
#[derive(Debug, Default)]
pub struct SharedStores {
    runs: Mutex<std::collections::BTreeMap<JobId, Arc<dyn CheckpointStore>>>,
}

impl CheckpointStoreProvider for SharedStores {
    fn open_run(&self, job_id: JobId, run_dir: Option<&Path>) -> Arc<dyn CheckpointStore> {
        let mut runs = self
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = runs.entry(job_id).or_insert_with(|| {
            let root = run_dir.map_or_else(
                || Path::new(CHECKPOINT_DIR).join(job_id.to_string()),
                Path::to_path_buf,
            );
            Arc::new(VirtualDirectory {
                root,
                memory: StandardCheckpointStores.open_run(job_id, None),
            })
        });
        Arc::clone(store)
    }
}

/// A memory store whose checkpoint folders carry paths under `root`, which nobody reads: the
/// folders are found by name in memory. Savepoints (folders outside `root`) go to the memory
/// store unchanged, which writes them to their target on disk.
#[derive(Debug)]
struct VirtualDirectory {
    root: PathBuf,
    memory: Arc<dyn CheckpointStore>,
}

impl VirtualDirectory {
    /// `folder` as the memory store knows it.
    fn inner(&self, folder: &CheckpointFolder) -> CheckpointFolder {
        match &folder.path {
            Some(path) if path.starts_with(&self.root) => CheckpointFolder {
                name: folder.name.clone(),
                path: None,
            },
            _ => folder.clone(),
        }
    }
}

impl CheckpointStore for VirtualDirectory {
    fn folder(&self, id: CheckpointId, savepoint_target: Option<&Path>) -> CheckpointFolder {
        let folder = self.memory.folder(id, savepoint_target);
        if savepoint_target.is_some() {
            return folder;
        }
        CheckpointFolder {
            path: Some(self.root.join(&folder.name)),
            name: folder.name,
        }
    }

    fn write_file(
        &self,
        folder: &CheckpointFolder,
        name: &str,
        frame: &[u8],
    ) -> Result<FileMetadata, StorageError> {
        self.memory.write_file(&self.inner(folder), name, frame)
    }

    fn complete(
        &self,
        folder: &CheckpointFolder,
        metadata: &CheckpointMetadata,
    ) -> Result<(), StorageError> {
        self.memory.complete(&self.inner(folder), metadata)
    }

    fn discard(&self, folder: &CheckpointFolder) {
        self.memory.discard(&self.inner(folder));
    }

    fn discard_incomplete(&self, folder: &CheckpointFolder) {
        self.memory.discard_incomplete(&self.inner(folder));
    }

    fn checkpoint_ids(&self) -> Vec<CheckpointId> {
        self.memory.checkpoint_ids()
    }

    fn read_file(&self, folder: &CheckpointFolder, name: &str) -> Result<Vec<u8>, StorageError> {
        self.memory.read_file(&self.inner(folder), name)
    }
}

/// What a cluster run produced.
#[derive(Debug)]
pub(crate) struct ClusterRun<S> {
    /// The JobManager's sink handle (a collect sink's elements arrive there).
    pub(crate) job_manager: S,
    /// Every TaskManager's sink handle, in the order they built the job (an exactly-once
    /// sink commits on the node its subtask runs on).
    pub(crate) task_managers: Vec<S>,
    /// The job's result.
    pub(crate) result: JobResult,
    /// Virtual time from the start to the job's end.
    pub(crate) elapsed: Duration,
    /// The network's hash of every datagram it delivered.
    pub(crate) network_trace: u64,
    /// What happened to datagrams.
    pub(crate) network: NetworkStats,
    /// Node faults that happened, in order.
    pub(crate) fired: Vec<Fault>,
    /// TaskManager nodes killed.
    pub(crate) node_crashes: u32,
    /// Joins that failed: refused (a node id in use, another job fingerprint) or cut short
    /// (the JobManager unreachable, or closing the connection on a refusal).
    pub(crate) failed_joins: u32,
}

/// A node fault's step, at a time.
#[derive(Debug, Clone, Copy)]
enum Step {
    Crash(Fault, u32),
    Isolate(Fault, u32),
    Heal,
    /// Kills a node that comes back with [`Step::Return`] of the same number.
    Restart(Fault, u32, usize),
    Return(usize),
}

type NodeFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// A TaskManager node the driver polls.
struct Node<'a> {
    addr: SocketAddr,
    future: NodeFuture<'a>,
}

fn setup_error(error: NetError) -> SimulationError {
    SimulationError::Cluster(error.to_string())
}

/// The link faults of `plan`'s [`Fault::Packets`], the network's seed, and when the faults
/// stop (`None`: never).
fn link_faults(seed: u64, plan: &FaultPlan) -> (u64, LinkFaults, Option<Duration>) {
    match plan.packets() {
        Some(Fault::Packets {
            seed: network_seed,
            loss_per_mille,
            duplicate_per_mille,
            corrupt_per_mille,
            spike_per_mille,
            until_ms,
        }) => (
            network_seed,
            LinkFaults {
                loss: f64::from(loss_per_mille) / 1000.0,
                duplicate: f64::from(duplicate_per_mille) / 1000.0,
                corrupt: f64::from(corrupt_per_mille) / 1000.0,
                latency: (Duration::from_millis(1), Duration::from_millis(20)),
                spike: (
                    f64::from(spike_per_mille) / 1000.0,
                    Duration::from_millis(300),
                ),
            },
            (until_ms != u64::MAX).then(|| Duration::from_millis(until_ms)),
        ),
        _ => (seed, LinkFaults::none(), None),
    }
}

/// The node faults of `plan` as steps by time (a partition's heal is a step of its own).
fn steps(plan: &FaultPlan) -> Vec<(u64, Step)> {
    let mut steps = Vec::new();
    for fault in plan.node_faults() {
        match fault {
            Fault::NodeCrash { node, at_ms } => steps.push((at_ms, Step::Crash(fault, node))),
            Fault::Partition {
                node,
                at_ms,
                heal_ms,
            } => {
                steps.push((at_ms, Step::Isolate(fault, node)));
                steps.push((at_ms.saturating_add(heal_ms), Step::Heal));
            }
            Fault::NodeRestart {
                node,
                at_ms,
                down_ms,
            } => {
                let restart = steps.len();
                steps.push((at_ms, Step::Restart(fault, node, restart)));
                steps.push((at_ms.saturating_add(down_ms), Step::Return(restart)));
            }
            _ => {}
        }
    }
    steps.sort_by_key(|(at, _)| *at);
    steps
}

/// Builds the job on a node and executes it (on a TaskManager, `execute` serves the node's
/// share and never returns).
async fn node_job<S, B>(
    base: RuntimeEnv,
    setup: &NodeSetup<'_>,
    build: &B,
    sinks: &Mutex<Vec<S>>,
) -> Result<JobResult, JobError>
where
    B: Fn(&StreamEnv) -> S,
{
    let env = StreamEnv::new();
    env.set_runtime_env((setup.runtime)(base));
    (setup.configure)(&env);
    let sink = build(&env);
    sinks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(sink);
    env.execute("simulation").await
}

/// A TaskManager process: joins, serves a job, joins again (after a lost JobManager or a
/// partition), with backoff while the JobManager cannot be reached. Once `job_over` is set
/// (the simulated cluster's one job ended) a session that ends is the process's last: a
/// production TaskManager would wait for the next job, which a simulation never sends, and
/// every join it tried would be a TLS handshake with a closed endpoint.
async fn task_manager<F, Fut>(
    node: Arc<NetNode>,
    app: F,
    job_over: &std::cell::Cell<bool>,
    failed: &std::cell::Cell<u32>,
) where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future,
    Fut::Output: Debug,
{
    let mut backoff = Duration::from_millis(50);
    loop {
        if job_over.get() {
            return;
        }
        match eichhorn::cluster::serve_one_job(Arc::clone(&node), JOB_MANAGER, settings(), &app)
            .await
        {
            Ok(Served::Job) => {
                backoff = Duration::from_millis(50);
                // The session ended because the job did or the JobManager was lost: in the
                // first case the JobManager is about to close, so look again after a pause
                // rather than shake hands with it once more.
                tokio::time::sleep(backoff).await;
            }
            Ok(Served::ApplicationEnded(_)) => tokio::time::sleep(backoff).await,
            Err(_) => {
                failed.set(failed.get() + 1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Polls every node once per wake-up, in order; completes when every node's loop ended
/// (which happens only once the job is over).
async fn drive_nodes(nodes: &mut [Option<Node<'_>>]) {
    std::future::poll_fn(|cx| {
        for slot in nodes.iter_mut() {
            if let Some(node) = slot
                && node.future.as_mut().poll(cx).is_ready()
            {
                *slot = None;
            }
        }
        if nodes.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

/// Runs the job `build` declares on a JobManager and `task_managers` TaskManagers with `slots`
/// slots each, with the node and network faults of `plan`, within `deadline` of virtual time.
pub(crate) fn run_cluster<S, B>(
    seed: u64,
    task_managers: u32,
    slots: u32,
    plan: &FaultPlan,
    deadline: Duration,
    setup: &NodeSetup<'_>,
    build: &B,
) -> Result<ClusterRun<S>, SimulationError>
where
    B: Fn(&StreamEnv) -> S,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let result = runtime.block_on(drive(
        seed,
        task_managers,
        slots,
        plan,
        deadline,
        setup,
        build,
    ));
    // Dropping the runtime drops what is left of every node.
    drop(runtime);
    result
}

async fn drive<S, B>(
    seed: u64,
    task_managers: u32,
    slots: u32,
    plan: &FaultPlan,
    deadline: Duration,
    setup: &NodeSetup<'_>,
    build: &B,
) -> Result<ClusterRun<S>, SimulationError>
where
    B: Fn(&StreamEnv) -> S,
{
    let start = tokio::time::Instant::now();
    let (network_seed, faults, faults_until) = link_faults(seed, plan);
    let network = SimNetwork::new(network_seed, faults);
    if let Some(until) = faults_until {
        network.stop_faults_after(until);
    }
    let ca_seed = derive(seed, 0xCA);
    let ca = ClusterCa::from_seed(ca_seed).map_err(setup_error)?;
    let transport = settings().transport();
    let job_manager_node = Arc::new(
        sim_node(
            &network,
            JOB_MANAGER,
            &node_identity(&ca, ca_seed, "jobmanager", derive(node_seed(seed, 0), 0x1D))
                .map_err(setup_error)?,
            Hello::new("jobmanager", Role::JobManager),
            transport.clone(),
            node_seed(seed, 0),
        )
        .map_err(setup_error)?,
    );
    let sinks = Mutex::new(Vec::new());
    let job_over = std::cell::Cell::new(false);
    let failed_joins = std::cell::Cell::new(0);
    // A node's index names it and gives its address; a restarted node keeps its index and
    // runs as a new incarnation.
    let new_task_manager = |index: usize, incarnation: u32| -> Result<Node<'_>, SimulationError> {
        let name = format!("tm-{index}");
        let addr = task_manager_addr(index);
        let seed = incarnation_seed(node_seed(seed, index + 1), incarnation);
        let node = sim_node(
            &network,
            addr,
            &node_identity(&ca, ca_seed, &name, derive(seed, 0x1D)).map_err(setup_error)?,
            Hello::new(&name, Role::TaskManager { slots }),
            transport.clone(),
            seed,
        )
        .map_err(setup_error)?;
        let host = HostId(u32::try_from(index + 1).unwrap_or(u32::MAX));
        let base = RuntimeEnv::deterministic(seed).with_host(host);
        let sinks = &sinks;
        let app = move |_args: Vec<String>| node_job(base.clone(), setup, build, sinks);
        Ok(Node {
            addr,
            future: Box::pin(task_manager(Arc::new(node), app, &job_over, &failed_joins)),
        })
    };
    let mut nodes = Vec::new();
    for index in 0..task_managers as usize {
        nodes.push(Some(new_task_manager(index, 0)?));
    }
    // The nodes that are down for a restart, by restart step, and each index's incarnation.
    let mut restarting: std::collections::BTreeMap<usize, usize> =
        std::collections::BTreeMap::new();
    let mut incarnations: std::collections::BTreeMap<usize, u32> =
        std::collections::BTreeMap::new();
    let job_manager_env = RuntimeEnv::deterministic(node_seed(seed, 0)).with_host(HostId(0));
    let job_manager = eichhorn::cluster::as_job_manager(
        Arc::clone(&job_manager_node),
        settings(),
        Vec::new(),
        async {
            let env = StreamEnv::new();
            env.set_runtime_env((setup.runtime)(job_manager_env));
            (setup.configure)(&env);
            let sink = build(&env);
            let result = env.execute("simulation").await;
            (sink, result)
        },
    );
    tokio::pin!(job_manager);
    let steps = steps(plan);
    let mut next_step = 0;
    let mut fired = Vec::new();
    let mut node_crashes = 0;
    let give_up = start + deadline;
    let (sink, result) = loop {
        let next = steps
            .get(next_step)
            .map(|(at_ms, _)| start + Duration::from_millis(*at_ms));
        tokio::select! {
            biased;
            ended = &mut job_manager => break ended,
            () = tokio::time::sleep_until(give_up) => {
                return Err(SimulationError::Stuck {
                    seed,
                    plan: plan.clone(),
                    deadline,
                });
            }
            () = tokio::time::sleep_until(next.unwrap_or(give_up)), if next.is_some() => {
                let now = tokio::time::Instant::now();
                while let Some((at_ms, step)) = steps.get(next_step)
                    && start + Duration::from_millis(*at_ms) <= now
                {
                    next_step += 1;
                    let alive: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].is_some()).collect();
                    match *step {
                        Step::Crash(fault, node) if !alive.is_empty() => {
                            let index = alive[node as usize % alive.len()];
                            if let Some(killed) = nodes[index].take() {
                                // Dropping the node's future is the kill; unbinding its address
                                // silences whatever it left behind.
                                network.unbind(killed.addr);
                                drop(killed);
                            }
                            node_crashes += 1;
                            fired.push(fault);
                            let replacement = new_task_manager(nodes.len(), 0)?;
                            nodes.push(Some(replacement));
                        }
                        Step::Restart(fault, node, restart) if !alive.is_empty() => {
                            let index = alive[node as usize % alive.len()];
                            if let Some(killed) = nodes[index].take() {
                                network.unbind(killed.addr);
                                drop(killed);
                            }
                            node_crashes += 1;
                            fired.push(fault);
                            restarting.insert(restart, index);
                        }
                        Step::Return(restart) => {
                            if let Some(index) = restarting.remove(&restart) {
                                let incarnation = incarnations.entry(index).or_insert(0);
                                *incarnation += 1;
                                nodes[index] = Some(new_task_manager(index, *incarnation)?);
                            }
                        }
                        Step::Isolate(fault, node) if !alive.is_empty() => {
                            let index = alive[node as usize % alive.len()];
                            if let Some(isolated) = &nodes[index] {
                                network.isolate(isolated.addr);
                            }
                            fired.push(fault);
                        }
                        Step::Heal => network.heal(),
                        Step::Crash(..) | Step::Isolate(..) | Step::Restart(..) => {}
                    }
                }
            }
            // Completes only when every node's loop ended, which needs the job over: the
            // guard keeps a cluster with no node alive from spinning on it.
            () = drive_nodes(&mut nodes), if nodes.iter().any(Option::is_some) => {}
        }
    };
    let elapsed = start.elapsed();
    // The TaskManagers hear that the job ended and stop their subtasks; none joins again.
    job_over.set(true);
    let _ = tokio::time::timeout(GRACE, drive_nodes(&mut nodes)).await;
    drop(nodes);
    job_manager_node.close();
    let result = result.map_err(|source| SimulationError::Job { seed, source })?;
    let task_managers = sinks
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(ClusterRun {
        job_manager: sink,
        task_managers,
        result,
        elapsed,
        network_trace: network.trace_hash(),
        network: network.stats(),
        fired,
        node_crashes,
        failed_joins: failed_joins.get(),
    })
}

impl Simulation {
    /// [`Simulation::run`] on a cluster: the JobManager's collect sink is the output; the
    /// trace hash covers it and every datagram.
    pub(crate) fn run_on_cluster<T, F>(&self, build: &F) -> Result<SimulatedRun<T>, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CollectSink<T>,
    {
        let seed = self.seed;
        let stores: Arc<dyn CheckpointStoreProvider> = Arc::new(SharedStores::default());
        let configure = |env: &StreamEnv| {
            env.configure(|c| {
                c.seed = seed;
                c.job_id = Some(JobId::from_seed(seed));
            });
            env.set_checkpoint_storage(CHECKPOINT_DIR);
        };
        let runtime = |env: RuntimeEnv| env.with_checkpoint_stores(Arc::clone(&stores));
        let setup = NodeSetup {
            configure: &configure,
            runtime: &runtime,
        };
        let run = run_cluster(
            seed,
            self.nodes,
            self.slots_per_node,
            &FaultPlan::none(),
            self.deadline,
            &setup,
            build,
        )?;
        let output = run.job_manager.take();
        let mut hasher = StableHasher::new();
        hasher.write_u64(fingerprint(&output)?);
        hasher.write_u64(run.network_trace);
        Ok(SimulatedRun {
            output,
            trace_hash: hasher.finish(),
            virtual_elapsed: run.elapsed,
            faults_fired: Vec::new(),
            commit_log: Vec::new(),
            crashes: 0,
            checkpoints: run.result.completed_checkpoints,
            restarts: run.result.restarts,
            network: Some(run.network),
            result: run.result,
        })
    }

    /// [`Simulation::run_committed`] on a cluster, with the faults of `plan`: subtask, storage,
    /// stall, slow-disk and clock faults on every TaskManager (they share the injector and the
    /// checkpoint stores), node crashes, partitions and packet faults on the network. The
    /// committed output is every node's, merged ([`CommittedOutput::merged`]).
    pub(crate) fn run_plan_on_cluster<T, F>(
        &self,
        build: &F,
        plan: &FaultPlan,
        deadline: Duration,
    ) -> Result<SimulatedRun<T>, SimulationError>
    where
        T: Data,
        F: Fn(&StreamEnv) -> CommittedOutput<T>,
    {
        if let Some(crash) = plan
            .faults
            .iter()
            .find(|f| matches!(f, Fault::Crash { .. }))
        {
            return Err(SimulationError::Usage(format!(
                "the fault '{}' crashes the whole process, which a cluster run does not simulate \
                 (the JobManager does not fail over): use node-crash on several nodes",
                crash.spec()
            )));
        }
        let seed = self.seed;
        let failures = Arc::new(PlannedFailures::new(plan));
        let stores = Arc::new(FaultyStores::over(plan, Arc::new(SharedStores::default())));
        let skew = plan.clock_skew();
        if let Some((offset_ms, drift_per_mille)) = skew {
            failures.skewed(offset_ms, drift_per_mille);
        }
        // Each fault may cost a restart or two (a lost node is noticed, then its replacement
        // or the healed node joins), and a lossy network may cost more.
        let restarts_allowed = plan.faults.len() as u32 * 2 + 4;
        let configure = |env: &StreamEnv| {
            env.configure(|c| {
                c.seed = seed;
                c.job_id = Some(JobId::from_seed(seed));
                c.restart_strategy = Some(RestartStrategy::FixedDelay {
                    attempts: restarts_allowed,
                    delay_ms: 10,
                });
            });
            env.set_checkpoint_storage(CHECKPOINT_DIR);
        };
        let runtime = |env: RuntimeEnv| {
            let env = env
                .with_fault_injector(failures.clone())
                .with_checkpoint_stores(stores.clone());
            match skew {
                Some((offset_ms, drift_per_mille)) => {
                    let (offset_ms, drift_per_mille) =
                        node_skew(env.host(), offset_ms, drift_per_mille);
                    env.with_clock(Arc::new(SkewedClock::new(offset_ms, drift_per_mille)))
                }
                None => env,
            }
        };
        let setup = NodeSetup {
            configure: &configure,
            runtime: &runtime,
        };
        let run = run_cluster(
            seed,
            self.nodes,
            self.slots_per_node,
            plan,
            deadline,
            &setup,
            build,
        )?;
        let committed = CommittedOutput::merged(&run.task_managers);
        let output = committed.committed();
        let commit_log = committed.commit_log();
        let mut faults_fired = failures.fired();
        faults_fired.extend(stores.fired());
        faults_fired.extend(run.fired);
        // The network's faults count as fired once they hit a datagram.
        if let Some(packets) = plan.packets()
            && run.network.lost + run.network.duplicated + run.network.corrupted > 0
        {
            faults_fired.push(packets);
        }
        let checkpoints = run.result.completed_checkpoints;
        let restarts = run.result.restarts;
        let mut hasher = StableHasher::new();
        hasher.write_u64(trace_hash(
            &output,
            &commit_log,
            restarts,
            checkpoints,
            run.elapsed,
            &faults_fired,
        )?);
        hasher.write_u64(run.network_trace);
        hasher.write_u64(u64::from(run.failed_joins));
        Ok(SimulatedRun {
            output,
            result: run.result,
            trace_hash: hasher.finish(),
            virtual_elapsed: run.elapsed,
            faults_fired,
            commit_log,
            crashes: run.node_crashes,
            checkpoints,
            restarts,
            network: Some(run.network),
        })
    }
}

/// The clock skew of `host` in a plan whose clock fault names `offset_ms` and
/// `drift_per_mille`: every node is skewed its own way, host `h` by `(h % 4) / 3` of both, so
/// the JobManager (host 0) keeps virtual time and the clocks of two nodes disagree by up to the
/// whole skew the plan names.
fn node_skew(host: HostId, offset_ms: u64, drift_per_mille: u32) -> (u64, u32) {
    let share = u64::from(host.0 % 4);
    let drift = u64::from(drift_per_mille) * share / 3;
    (
        offset_ms * share / 3,
        u32::try_from(drift).unwrap_or(u32::MAX),
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn nodes_are_skewed_differently_and_the_job_manager_not_at_all() {
        let skews: Vec<(u64, u32)> = (0..5)
            .map(|h| super::node_skew(eichhorn::runtime::HostId(h), 900, 30))
            .collect();
        assert_eq!(skews, [(0, 0), (300, 10), (600, 20), (900, 30), (0, 0)]);
    }

    use super::*;
    use crate::jobs::BuiltinJob;
    use eichhorn::runtime::{FaultInjector, InjectedFault, SubtaskInput};

    /// Notes the host and node time of every subtask input.
    #[derive(Debug)]
    struct Recorder {
        host: u32,
        log: Arc<Mutex<Vec<(u32, i64)>>>,
    }

    impl FaultInjector for Recorder {
        fn before_input(&self, at: SubtaskInput) -> Option<InjectedFault> {
            self.log.lock().unwrap().push((self.host, at.now_ms));
            None
        }
    }

    #[test]
    fn a_crashed_task_manager_runs_nothing_after_its_crash() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stores: Arc<dyn CheckpointStoreProvider> = Arc::new(SharedStores::default());
        let configure = |env: &StreamEnv| {
            env.configure(|c| {
                c.seed = 1;
                c.job_id = Some(JobId::from_seed(1));
                c.restart_strategy = Some(RestartStrategy::FixedDelay {
                    attempts: 5,
                    delay_ms: 10,
                });
            });
            env.set_checkpoint_storage(CHECKPOINT_DIR);
        };
        let runtime = |env: RuntimeEnv| {
            let host = env.host().0;
            env.with_checkpoint_stores(Arc::clone(&stores))
                .with_fault_injector(Arc::new(Recorder {
                    host,
                    log: Arc::clone(&log),
                }))
        };
        let plan = FaultPlan::parse_spec("node-crash:node=0:at=200").unwrap();
        let run = run_cluster(
            1,
            3,
            2,
            &plan,
            Duration::from_secs(600),
            &NodeSetup {
                configure: &configure,
                runtime: &runtime,
            },
            &|env: &StreamEnv| BuiltinJob::KeyedSum.build(env),
        )
        .unwrap();
        assert_eq!(run.node_crashes, 1);
        assert!(run.result.restarts >= 1);
        // tm-0 is host 1; every node's clock starts with the run.
        let log = log.lock().unwrap();
        assert!(
            log.iter().any(|(host, at)| *host == 1 && *at < 200),
            "tm-0 ran subtasks before its crash"
        );
        let after: Vec<_> = log
            .iter()
            .filter(|(host, at)| *host == 1 && *at > 200)
            .collect();
        assert!(after.is_empty(), "tm-0 ran after its crash: {after:?}");
    }

    /// Runs keyed_sum on 3 nodes with `plan` and a shared memory store.
    fn run_keyed_sum(
        seed: u64,
        plan: &str,
    ) -> ClusterRun<crate::CommittedOutput<crate::jobs::Row>> {
        let stores: Arc<dyn CheckpointStoreProvider> = Arc::new(SharedStores::default());
        let configure = |env: &StreamEnv| {
            env.configure(|c| {
                c.seed = seed;
                c.job_id = Some(JobId::from_seed(seed));
                c.restart_strategy = Some(RestartStrategy::FixedDelay {
                    attempts: 5,
                    delay_ms: 10,
                });
            });
            env.set_checkpoint_storage(CHECKPOINT_DIR);
        };
        let runtime = |env: RuntimeEnv| env.with_checkpoint_stores(Arc::clone(&stores));
        run_cluster(
            seed,
            3,
            2,
            &FaultPlan::parse_spec(plan).unwrap(),
            Duration::from_secs(600),
            &NodeSetup {
                configure: &configure,
                runtime: &runtime,
            },
            &|env: &StreamEnv| BuiltinJob::KeyedSum.build(env),
        )
        .unwrap()
    }

    #[test]
    fn a_restarted_task_manager_is_admitted_at_once_under_its_old_name_and_address() {
        // Back after 100 ms, long before the JobManager's heartbeat timeout (1 s) would have
        // dropped the old incarnation: the JobManager must take the new one for the old.
        let run = run_keyed_sum(2, "node-restart:node=0:at=150:down=100");
        assert_eq!(run.node_crashes, 1);
        assert!(run.result.restarts >= 1, "the job restarted");
        assert_eq!(
            run.failed_joins, 0,
            "the restarted node was not admitted at once (refused as a duplicate of its old \
             incarnation)"
        );
        // Back after the old one timed out: nothing to replace, joins as usual.
        let late = run_keyed_sum(2, "node-restart:node=1:at=150:down=1500");
        assert_eq!(late.failed_joins, 0);
        assert!(late.result.restarts >= 1);
    }

    #[test]
    fn task_manager_addresses_are_distinct() {
        let addresses: std::collections::BTreeSet<SocketAddr> =
            (0..600).map(task_manager_addr).collect();
        assert_eq!(addresses.len(), 600);
        assert!(!addresses.contains(&JOB_MANAGER));
    }

    #[test]
    fn steps_are_ordered_by_time_with_heals() {
        let plan = FaultPlan::parse_spec(
            "partition:node=1:at=50:heal=100,node-crash:node=0:at=120,packets:seed=1:loss=1:dup=0:corrupt=0:spike=0",
        )
        .unwrap();
        let times: Vec<u64> = steps(&plan).iter().map(|(at, _)| *at).collect();
        assert_eq!(times, vec![50, 120, 150]);
        assert!(matches!(steps(&plan)[2].1, Step::Heal));
    }
}
