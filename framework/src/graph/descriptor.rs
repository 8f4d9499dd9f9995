//! The job descriptor: everything about a job that is data, in one serde value with a
//! fingerprint.
//!
//! A [`JobDescriptor`] holds the job's name, its [`ExecutionConfig`], its [`ExecutionGraph`]
//! (which holds the [`JobGraph`](super::JobGraph) and the logical
//! [`StreamGraph`](super::StreamGraph): operators with their names, uids, parallelism, kinds and
//! state schemas; edges with their partitioning; chains; subtasks and channels) and the
//! [`Placement`] of every subtask on a TaskManager slot. What is not data, the closures that build
//! operators and the typed ports around them, is in the runtime's operator registry, which every
//! process rebuilds by running the same job-building code.
//!
//! ## Fingerprint
//!
//! [`JobDescriptor::fingerprint`] is the [`StableHasher`] hash of the canonical postcard bytes of
//! the job's name, configuration and execution graph (so of every operator's state schema too).
//! Two processes that ran the same job-building code get the same fingerprint; a change of
//! parallelism, partitioning, uid, chaining or state schema changes it. It leaves out what names
//! one run or one node rather than the job: the placement (it depends on which TaskManagers
//! registered), [`ExecutionConfig::job_id`], [`ExecutionConfig::local_state_dir`] and
//! [`ExecutionConfig::restore`].
//!
//! ## Encoding
//!
//! `magic "EHJD" | version (1 byte) | checksum (8 bytes, little-endian) | postcard body`, the
//! checksum being the [`StableHasher`] hash of the body bytes. [`JobDescriptor::decode`] never
//! trusts the bytes: it checks the header and the checksum (so a damaged byte anywhere is
//! caught, also in the parts the fingerprint leaves out), decodes the body with no byte left
//! over, then checks that the graph is well formed, that the chains, subtasks and channels are
//! exactly what the logical graph and configuration give, and that the placement fits them (so a
//! body crafted with a valid checksum cannot make the runtime index out of range). Garbage is
//! an error naming what is wrong, never a panic.

use serde::{Deserialize, Serialize};

use super::config::ExecutionConfig;
use super::execution_graph::ExecutionGraph;
use super::job_graph::JobGraph;
use super::placement::{Placement, PlacementError, SlotOffer};
use super::stream_graph::{OutputSelector, StreamGraph};
use crate::error::GraphError;
use crate::state::StableHasher;

/// The first bytes of an encoded descriptor.
pub const DESCRIPTOR_MAGIC: [u8; 4] = *b"EHJD";
/// The encoding's version; a decoder refuses any other.
pub const DESCRIPTOR_VERSION: u8 = 1;
/// Magic, version and checksum.
pub const DESCRIPTOR_HEADER_BYTES: usize = 4 + 1 + 8;

/// The fingerprint of a job (see the module docs for what it covers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobFingerprint(pub u64);

impl std::fmt::Display for JobFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a descriptor could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// Fewer bytes than the header.
    #[error(
        "job descriptor truncated: {len} byte(s), the header alone is {DESCRIPTOR_HEADER_BYTES}"
    )]
    Truncated {
        /// The bytes given.
        len: usize,
    },
    /// The bytes do not start with [`DESCRIPTOR_MAGIC`].
    #[error("not a job descriptor: it starts with {found:02x?}, expected {DESCRIPTOR_MAGIC:02x?}")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// Another encoding version.
    #[error("job descriptor version {found}, this build reads version {DESCRIPTOR_VERSION}")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
    /// The body is not a descriptor.
    #[error("job descriptor body does not decode: {0}")]
    Body(#[source] postcard::Error),
    /// Bytes after the body.
    #[error("job descriptor has {0} byte(s) after its body")]
    TrailingBytes(usize),
    /// The descriptor cannot be encoded (a path that is not UTF-8, say).
    #[error("job descriptor does not encode: {0}")]
    Encode(#[source] postcard::Error),
    /// The body decoded but does not describe a consistent job.
    #[error("job descriptor is inconsistent: {0}")]
    Inconsistent(String),
    /// The placement does not fit the graph.
    #[error("job descriptor's placement: {0}")]
    Placement(#[from] PlacementError),
    /// The checksum in the header is not the body's: bytes were damaged.
    #[error(
        "job descriptor checksum mismatch: the header says {header:016x}, the body hashes to \
         {body:016x} (damaged in transit or storage)"
    )]
    ChecksumMismatch {
        /// From the header.
        header: u64,
        /// Recomputed from the body.
        body: u64,
    },
}

/// A job as data: name, configuration, execution graph and placement (see the module docs).
///
/// It serialises with serde but deliberately does not deserialise: bytes become a descriptor
/// only through [`JobDescriptor::decode`], which checks them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDescriptor {
    name: String,
    config: ExecutionConfig,
    graph: ExecutionGraph,
    placement: Placement,
}

/// The body as it decodes, before any check: the fields of [`JobDescriptor`], in its order.
#[derive(Deserialize)]
struct Unchecked {
    name: String,
    config: ExecutionConfig,
    graph: ExecutionGraph,
    placement: Placement,
}

/// What the fingerprint hashes: the descriptor without placement and per-run settings.
#[derive(Serialize)]
struct Canonical<'a> {
    domain: &'static str,
    name: &'a str,
    config: &'a ExecutionConfig,
    graph: &'a ExecutionGraph,
}

impl JobDescriptor {
    /// Resolves, chains and expands `stream` under `config`, and places it on `offers`.
    ///
    /// # Errors
    ///
    /// The graph or configuration is invalid (see [`JobGraph`](super::JobGraph)), or the
    /// offers hold too few slots ([`GraphError::Placement`]).
    pub fn build(
        name: impl Into<String>,
        stream: StreamGraph,
        config: ExecutionConfig,
        offers: &[SlotOffer],
    ) -> Result<Self, GraphError> {
        let graph = ExecutionGraph::build(JobGraph::build(stream, &config)?);
        let placement = Placement::place(&graph, offers)?;
        Ok(Self {
            name: name.into(),
            config,
            graph,
            placement,
        })
    }

    /// As [`JobDescriptor::build`], placed on one local TaskManager with enough slots
    /// ([`Placement::local`]).
    ///
    /// # Errors
    ///
    /// The graph or configuration is invalid.
    pub fn local(
        name: impl Into<String>,
        stream: StreamGraph,
        config: ExecutionConfig,
    ) -> Result<Self, GraphError> {
        let graph = ExecutionGraph::build(JobGraph::build(stream, &config)?);
        let placement = Placement::local(&graph);
        Ok(Self {
            name: name.into(),
            config,
            graph,
            placement,
        })
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's configuration.
    pub fn config(&self) -> &ExecutionConfig {
        &self.config
    }

    /// Subtasks and channels (and, through it, the job graph and the logical graph).
    pub fn execution_graph(&self) -> &ExecutionGraph {
        &self.graph
    }

    /// Where every subtask runs.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Sets the id of the run (not part of the fingerprint).
    pub(crate) fn set_job_id(&mut self, job_id: crate::checkpoint::JobId) {
        self.config.job_id = Some(job_id);
    }

    /// The parts the runtime keeps apart.
    pub(crate) fn into_parts(self) -> (String, ExecutionConfig, ExecutionGraph, Placement) {
        (self.name, self.config, self.graph, self.placement)
    }

    /// The job's fingerprint (see the module docs).
    ///
    /// # Errors
    ///
    /// The descriptor does not encode (a configured path that is not UTF-8).
    pub fn fingerprint(&self) -> Result<JobFingerprint, DescriptorError> {
        let mut config = self.config.clone();
        config.job_id = None;
        config.local_state_dir = None;
        config.restore = None;
        let canonical = Canonical {
            domain: "eichhorn job descriptor v1",
            name: &self.name,
            config: &config,
            graph: &self.graph,
        };
        let bytes = postcard::to_stdvec(&canonical).map_err(DescriptorError::Encode)?;
        let mut hasher = StableHasher::new();
        hasher.write_bytes(&bytes);
        Ok(JobFingerprint(hasher.finish()))
    }

    /// Encodes the descriptor (see the module docs for the format).
    ///
    /// # Errors
    ///
    /// The descriptor does not encode (a configured path that is not UTF-8).
    pub fn encode(&self) -> Result<Vec<u8>, DescriptorError> {
        let body = postcard::to_stdvec(self).map_err(DescriptorError::Encode)?;
        let mut bytes = Vec::with_capacity(DESCRIPTOR_HEADER_BYTES + body.len());
        bytes.extend_from_slice(&DESCRIPTOR_MAGIC);
        bytes.push(DESCRIPTOR_VERSION);
        bytes.extend_from_slice(&checksum(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Decodes and checks a descriptor [`JobDescriptor::encode`] produced.
    ///
    /// # Errors
    ///
    /// The bytes are truncated, extended, of another version, garbled, or describe a job
    /// that is not consistent: the error says which.
    pub fn decode(bytes: &[u8]) -> Result<Self, DescriptorError> {
        if bytes.len() < DESCRIPTOR_HEADER_BYTES {
            return Err(DescriptorError::Truncated { len: bytes.len() });
        }
        let (magic, rest) = bytes.split_at(4);
        if magic != DESCRIPTOR_MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(DescriptorError::BadMagic { found });
        }
        let (version, rest) = rest.split_at(1);
        if version[0] != DESCRIPTOR_VERSION {
            return Err(DescriptorError::UnsupportedVersion { found: version[0] });
        }
        let (header, body) = rest.split_at(8);
        let mut word = [0u8; 8];
        word.copy_from_slice(header);
        let header = u64::from_le_bytes(word);
        let (unchecked, trailing): (Unchecked, _) =
            postcard::take_from_bytes(body).map_err(DescriptorError::Body)?;
        if !trailing.is_empty() {
            return Err(DescriptorError::TrailingBytes(trailing.len()));
        }
        let computed = checksum(body);
        if computed != header {
            return Err(DescriptorError::ChecksumMismatch {
                header,
                body: computed,
            });
        }
        let descriptor = Self {
            name: unchecked.name,
            config: unchecked.config,
            graph: unchecked.graph,
            placement: unchecked.placement,
        };
        descriptor.check()?;
        Ok(descriptor)
    }

    /// Checks that the logical graph is well formed and that everything derived from it is
    /// what it derives to, so that no index in a decoded descriptor can be out of range.
    fn check(&self) -> Result<(), DescriptorError> {
        let inconsistent = |what: String| Err(DescriptorError::Inconsistent(what));
        let stream = self.graph.job.stream_graph();
        for (position, node) in stream.nodes().iter().enumerate() {
            if node.id.0 as usize != position {
                return inconsistent(format!(
                    "operator '{}' at position {position} has id {}",
                    node.name, node.id.0
                ));
            }
        }
        let count = stream.nodes().len();
        for (index, edge) in stream.edges().iter().enumerate() {
            if edge.source.0 as usize >= count || edge.target.0 as usize >= count {
                return inconsistent(format!(
                    "edge {index} connects operators {} and {}, the graph has {count}",
                    edge.source.0, edge.target.0
                ));
            }
            if edge.source >= edge.target {
                return inconsistent(format!(
                    "edge {index} runs from operator {} back to operator {}",
                    edge.source.0, edge.target.0
                ));
            }
            if let OutputSelector::Side(tag) = &edge.output
                && !stream.node(edge.source).side_outputs.contains(tag)
            {
                return inconsistent(format!(
                    "edge {index} leaves side output '{tag}', which operator {} does not have",
                    edge.source.0
                ));
            }
        }
        let rebuilt = JobGraph::build(stream.clone(), &self.config)
            .map_err(|e| DescriptorError::Inconsistent(e.to_string()))?;
        if rebuilt != self.graph.job {
            return inconsistent(
                "the chains and partitioning are not those of its operators and configuration"
                    .to_string(),
            );
        }
        if ExecutionGraph::build(rebuilt) != self.graph {
            return inconsistent(
                "the subtasks and channels are not those of its chains".to_string(),
            );
        }
        self.placement.validate(&self.graph)?;
        Ok(())
    }
}

/// The checksum of an encoded body.
fn checksum(body: &[u8]) -> u64 {
    let mut hasher = StableHasher::new();
    hasher.write_u64(0x4548_4a44_0000_0001); // "EHJD" v1: not the fingerprint's domain
    hasher.write_bytes(body);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::graph::testing::{diamond, pipeline};
    use crate::graph::{PartitionKind, TaskManagerId};
    use crate::operator::NodeId;
    use crate::state::{StateFieldKind, StateFieldSchema, StateSchema};

    fn local(graph: StreamGraph) -> JobDescriptor {
        JobDescriptor::local("job", graph, ExecutionConfig::default()).expect("a valid job")
    }

    fn sample() -> JobDescriptor {
        local(pipeline(
            &[2, 2, 4, 1],
            &[
                PartitionKind::Forward,
                PartitionKind::Hash,
                PartitionKind::Rebalance,
            ],
        ))
    }

    fn fingerprint(descriptor: &JobDescriptor) -> JobFingerprint {
        descriptor.fingerprint().expect("encodes")
    }

    fn schema(layout: &str) -> StateSchema {
        StateSchema {
            fields: vec![StateFieldSchema {
                field: "sum".to_string(),
                state: "sum".to_string(),
                kind: StateFieldKind::Value,
                type_text: "ValueState<u64>".to_string(),
                ttl: false,
                layout: layout.to_string(),
            }],
        }
    }

    #[test]
    fn the_same_job_building_code_gives_the_same_fingerprint() {
        assert_eq!(fingerprint(&sample()), fingerprint(&sample()));
        assert_eq!(
            fingerprint(&local(diamond())),
            fingerprint(&local(diamond()))
        );
        assert_ne!(fingerprint(&sample()), fingerprint(&local(diamond())));
    }

    #[test]
    fn the_fingerprint_is_frozen() {
        // Every process and version must agree: a change here breaks mixed-version clusters
        // on purpose only.
        let bytes = sample().encode().expect("encodes");
        let again = JobDescriptor::decode(&bytes).expect("decodes");
        assert_eq!(fingerprint(&again), fingerprint(&sample()));
        assert_eq!(format!("{}", JobFingerprint(0xab)), "00000000000000ab");
    }

    #[test]
    fn parallelism_changes_the_fingerprint() {
        let other = local(pipeline(
            &[2, 2, 3, 1],
            &[
                PartitionKind::Forward,
                PartitionKind::Hash,
                PartitionKind::Rebalance,
            ],
        ));
        assert_ne!(fingerprint(&sample()), fingerprint(&other));
        let config = ExecutionConfig {
            max_parallelism: 64,
            ..ExecutionConfig::default()
        };
        let rescaled_keys = JobDescriptor::local("job", sample_graph(), config).expect("valid");
        assert_ne!(fingerprint(&sample()), fingerprint(&rescaled_keys));
    }

    fn sample_graph() -> StreamGraph {
        sample()
            .execution_graph()
            .job_graph()
            .stream_graph()
            .clone()
    }

    #[test]
    fn partitioning_changes_the_fingerprint() {
        let other = local(pipeline(
            &[2, 2, 4, 1],
            &[
                PartitionKind::Forward,
                PartitionKind::Hash,
                PartitionKind::Rescale,
            ],
        ));
        assert_ne!(fingerprint(&sample()), fingerprint(&other));
        // Same channels (all-to-all), other partitioner: still another job.
        let shuffled = local(pipeline(
            &[2, 2, 4, 1],
            &[
                PartitionKind::Forward,
                PartitionKind::Shuffle,
                PartitionKind::Rebalance,
            ],
        ));
        assert_ne!(fingerprint(&sample()), fingerprint(&shuffled));
    }

    #[test]
    fn a_uid_changes_the_fingerprint() {
        let mut graph = sample_graph();
        graph.node_mut(NodeId(2)).uid = Some("renamed".to_string());
        assert_ne!(fingerprint(&sample()), fingerprint(&local(graph)));
        let mut graph = sample_graph();
        graph.node_mut(NodeId(2)).uid = None;
        assert_ne!(fingerprint(&sample()), fingerprint(&local(graph)));
    }

    #[test]
    fn a_state_schema_changes_the_fingerprint() {
        let with = |layout: &str| {
            let mut graph = sample_graph();
            graph.node_mut(NodeId(2)).state_schema = schema(layout);
            local(graph)
        };
        assert_ne!(fingerprint(&sample()), fingerprint(&with("U64")));
        assert_ne!(fingerprint(&with("U64")), fingerprint(&with("I64")));
        assert_eq!(fingerprint(&with("U64")), fingerprint(&with("U64")));
    }

    #[test]
    fn run_and_node_settings_and_placement_leave_the_fingerprint() {
        let config = ExecutionConfig {
            job_id: Some(crate::checkpoint::JobId(7)),
            local_state_dir: Some("/somewhere/else".into()),
            restore: Some(crate::graph::config::RestoreSettings {
                path: "/savepoints/savepoint-1".into(),
                allow_non_restored_state: false,
            }),
            ..ExecutionConfig::default()
        };
        let run = JobDescriptor::local("job", sample_graph(), config).expect("valid");
        assert_eq!(fingerprint(&sample()), fingerprint(&run));
        let offers = [
            SlotOffer {
                task_manager: TaskManagerId(3),
                slots: 2,
            },
            SlotOffer {
                task_manager: TaskManagerId(5),
                slots: 2,
            },
        ];
        let spread =
            JobDescriptor::build("job", sample_graph(), ExecutionConfig::default(), &offers)
                .expect("enough slots");
        assert_ne!(spread.placement(), sample().placement());
        assert_eq!(fingerprint(&sample()), fingerprint(&spread));
        // The job's own settings are part of it.
        let mut config = ExecutionConfig::default();
        config.checkpointing = crate::graph::config::CheckpointConfig {
            interval_ms: Some(1000),
            ..config.checkpointing
        };
        let checkpointed = JobDescriptor::local("job", sample_graph(), config).expect("valid");
        assert_ne!(fingerprint(&sample()), fingerprint(&checkpointed));
    }

    #[test]
    fn a_descriptor_round_trips() {
        for descriptor in [sample(), local(diamond())] {
            let bytes = descriptor.encode().expect("encodes");
            assert_eq!(&bytes[..4], &DESCRIPTOR_MAGIC);
            let decoded = JobDescriptor::decode(&bytes).expect("decodes");
            assert_eq!(decoded, descriptor);
            assert_eq!(decoded.encode().expect("encodes"), bytes);
        }
    }

    /// Encodes `descriptor` as it is, with a valid header: what a buggy or hostile peer sends.
    fn encode_unchecked(descriptor: &JobDescriptor) -> Vec<u8> {
        descriptor.encode().expect("encodes")
    }

    #[test]
    fn an_inconsistent_body_with_a_valid_checksum_is_refused() {
        let mut dangling = sample();
        dangling.graph.job.stream.edges[0].target = NodeId(40);
        let mut backwards = sample();
        backwards.graph.job.stream.edges[1].source = NodeId(3);
        let mut rechained = sample();
        rechained.graph.job.chained[0] = false;
        let mut rewired = sample();
        rewired.graph.subtasks[0].outputs[0].consumer = 99;
        let mut misplaced = sample();
        misplaced.placement = Placement::local(&local(diamond()).graph);
        let mut undeclared_side = local(diamond());
        undeclared_side.graph.job.stream.nodes[2]
            .side_outputs
            .clear();
        for (what, bad) in [
            ("dangling edge", dangling),
            ("backwards edge", backwards),
            ("chaining", rechained),
            ("channels", rewired),
            ("placement", misplaced),
            ("side output", undeclared_side),
        ] {
            let error = JobDescriptor::decode(&encode_unchecked(&bad))
                .expect_err(what)
                .to_string();
            assert!(
                error.contains("inconsistent") || error.contains("placement"),
                "{what}: {error}"
            );
        }
    }

    #[test]
    fn damaged_headers_name_what_is_wrong() {
        let bytes = sample().encode().expect("encodes");
        let error = |bytes: &[u8]| {
            JobDescriptor::decode(bytes)
                .expect_err("damaged")
                .to_string()
        };
        assert!(error(&bytes[..5]).contains("truncated"));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(error(&magic).contains("not a job descriptor"));
        let mut version = bytes.clone();
        version[4] = 9;
        assert!(error(&version).contains("version 9"));
        let mut checksum = bytes.clone();
        checksum[6] ^= 1;
        assert!(error(&checksum).contains("checksum mismatch"));
        let mut extended = bytes.clone();
        extended.push(0);
        assert!(error(&extended).contains("after its body"));
        assert!(error(&bytes[..bytes.len() - 1]).contains("does not decode"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any damage (one byte changed, bytes cut or added, or garbage) is an error, never a
        /// panic and never another job.
        #[test]
        fn garbled_descriptors_decode_to_an_error(
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
            extra in prop::collection::vec(any::<u8>(), 1..16),
            garbage in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let bytes = local(diamond()).encode().expect("encodes");
            let mut flipped = bytes.clone();
            flipped[position.index(bytes.len())] ^= flip;
            prop_assert!(JobDescriptor::decode(&flipped).is_err());
            prop_assert!(JobDescriptor::decode(&bytes[..cut.index(bytes.len())]).is_err());
            let mut extended = bytes.clone();
            extended.extend_from_slice(&extra);
            prop_assert!(JobDescriptor::decode(&extended).is_err());
            let mut headed = bytes[..DESCRIPTOR_HEADER_BYTES].to_vec();
            headed.extend_from_slice(&garbage);
            prop_assert!(JobDescriptor::decode(&headed).is_err());
            prop_assert!(JobDescriptor::decode(&garbage).is_err());
        }
    }
}
