//! The handshake after TLS: who the peer is and whether the two nodes can work together.
//!
//! The connecting node opens the control stream and sends a [`Hello`]; the accepting node
//! checks it against its own ([`check_hello`], pure) and answers [`HelloReply::Welcome`] with
//! its own `Hello`, or [`HelloReply::Refused`] with the reason, and closes the connection. Both
//! sides log a refusal with the reason. TLS has already proved that the peer holds a
//! certificate from the cluster's CA; the handshake checks what TLS cannot: the protocol
//! version, the roles, and the job both nodes built.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Nodes of a cluster must speak the same one.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a node is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The JobManager: coordinates, accepts TaskManagers.
    JobManager,
    /// A TaskManager offering `slots` slots.
    TaskManager {
        /// The subtasks it can run at once.
        slots: u32,
    },
}

/// The first message on a connection's control stream, from each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender's build.
    pub protocol_version: u32,
    /// The sender's node id, unique in the cluster (for logs and placement).
    pub node: String,
    /// The sender's role.
    pub role: Role,
    /// The fingerprint of the job the sender built (`graph::JobFingerprint`), once it built
    /// one. A TaskManager joining for the first time has not: it learns the job's arguments
    /// from the JobManager and reports its fingerprint after building the job.
    pub job_fingerprint: Option<u64>,
}

impl Hello {
    /// A hello of this build's protocol version.
    pub fn new(node: impl Into<String>, role: Role) -> Self {
        Self {
            protocol_version: PROTOCOL_VERSION,
            node: node.into(),
            role,
            job_fingerprint: None,
        }
    }
}

/// The accepting side's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted; the acceptor's own hello.
    Welcome(Hello),
    /// Refused, with a reason meant for the peer's log; the connection closes.
    Refused(String),
}

/// Why a peer was refused: the reason both sides log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Different protocol versions.
    #[error(
        "node '{peer}' speaks protocol version {theirs}, this node {ours}: run the same Eichhorn \
         build on every node"
    )]
    Version {
        /// The peer's node id.
        peer: String,
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// Both built a job, and not the same one.
    #[error(
        "node '{peer}' built job {theirs:016x}, this node built {ours:016x}: every node must run \
         the same binary with the same job arguments"
    )]
    Fingerprint {
        /// The peer's node id.
        peer: String,
        /// The peer's job fingerprint.
        theirs: u64,
        /// Ours.
        ours: u64,
    },
    /// The two roles cannot talk (two JobManagers, or a TaskManager calling a TaskManager
    /// before it was told about it).
    #[error("node '{peer}' is a {theirs} and cannot connect to this {ours}")]
    Roles {
        /// The peer's node id.
        peer: String,
        /// The peer's role.
        theirs: &'static str,
        /// Ours.
        ours: &'static str,
    },
    /// The node id is already connected.
    #[error("node id '{peer}' is already in use in this cluster")]
    DuplicateNode {
        /// The peer's node id.
        peer: String,
    },
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::JobManager => "JobManager",
        Role::TaskManager { .. } => "TaskManager",
    }
}

/// Whether the node described by `ours` accepts a peer that said `theirs`. TaskManagers accept
/// TaskManagers (data channels between them); nobody accepts a second JobManager.
///
/// # Errors
///
/// The reason to refuse.
pub fn check_hello(ours: &Hello, theirs: &Hello) -> Result<(), Refusal> {
    if theirs.protocol_version != ours.protocol_version {
        return Err(Refusal::Version {
            peer: theirs.node.clone(),
            theirs: theirs.protocol_version,
            ours: ours.protocol_version,
        });
    }
    if theirs.role == Role::JobManager {
        return Err(Refusal::Roles {
            peer: theirs.node.clone(),
            theirs: role_name(&theirs.role),
            ours: role_name(&ours.role),
        });
    }
    if theirs.node == ours.node {
        return Err(Refusal::DuplicateNode {
            peer: theirs.node.clone(),
        });
    }
    if let (Some(t), Some(o)) = (theirs.job_fingerprint, ours.job_fingerprint)
        && t != o
    {
        return Err(Refusal::Fingerprint {
            peer: theirs.node.clone(),
            theirs: t,
            ours: o,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tm(node: &str) -> Hello {
        Hello::new(node, Role::TaskManager { slots: 2 })
    }

    #[test]
    fn a_task_manager_of_the_same_build_is_accepted() {
        let jm = Hello::new("jm", Role::JobManager);
        assert_eq!(check_hello(&jm, &tm("tm-1")), Ok(()));
        let mut built = tm("tm-2");
        built.job_fingerprint = Some(7);
        let mut ours = jm.clone();
        ours.job_fingerprint = Some(7);
        assert_eq!(check_hello(&ours, &built), Ok(()));
        // A peer that has not built the job yet is not refused for it.
        assert_eq!(check_hello(&ours, &tm("tm-3")), Ok(()));
    }

    #[test]
    fn refusals_name_the_peer_and_the_difference() {
        let mut jm = Hello::new("jm", Role::JobManager);
        let mut old = tm("tm-1");
        old.protocol_version = PROTOCOL_VERSION + 1;
        let refusal = check_hello(&jm, &old).unwrap_err();
        assert!(matches!(refusal, Refusal::Version { .. }));
        assert!(refusal.to_string().contains("'tm-1'"), "{refusal}");

        jm.job_fingerprint = Some(1);
        let mut other = tm("tm-2");
        other.job_fingerprint = Some(2);
        let refusal = check_hello(&jm, &other).unwrap_err();
        assert!(
            refusal.to_string().contains("0000000000000002"),
            "{refusal}"
        );

        let refusal = check_hello(&jm, &Hello::new("jm-2", Role::JobManager)).unwrap_err();
        assert!(matches!(refusal, Refusal::Roles { .. }), "{refusal}");

        let refusal = check_hello(&tm("tm-1"), &tm("tm-1")).unwrap_err();
        assert!(
            matches!(refusal, Refusal::DuplicateNode { .. }),
            "{refusal}"
        );
    }
}
