//! The role flags every Eichhorn application accepts besides its own (a pure parser).
//!
//! ```text
//! app [JOB FLAGS]                                                     run locally
//! app --jobmanager --bind ADDR [--rest ADDR] [--cluster-dir DIR] [JOB FLAGS]
//! app --taskmanager --join ADDR --slots N [--cluster-dir DIR] [--bind ADDR] [--node-id ID]
//! ```
//!
//! Timing flags for both roles: `--heartbeat-interval-ms MS`, `--heartbeat-timeout-ms MS`,
//! `--slot-wait-timeout-ms MS` (JobManager). Flags may also be written `--flag=value`.
//! Everything else is the job's own and is left in place, in order.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::runtime::cluster::ClusterSettings;

/// The default cluster directory, relative to the working directory.
pub const DEFAULT_CLUSTER_DIR: &str = ".eichhorn-cluster";

/// How this process runs, from its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// In this process alone, with these arguments (the program name first).
    Local(Vec<String>),
    /// As the cluster's JobManager.
    JobManager(JobManagerOptions),
    /// As a TaskManager.
    TaskManager(TaskManagerOptions),
}

/// The JobManager's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobManagerOptions {
    /// Where TaskManagers connect (UDP, QUIC).
    pub bind: SocketAddr,
    /// The HTTP status server's address, if any.
    pub rest: Option<SocketAddr>,
    /// The cluster directory (the certificate authority).
    pub cluster_dir: PathBuf,
    /// Timing.
    pub settings: ClusterSettings,
    /// The job's arguments for this process: the program name first, role flags removed
    /// (`--rest` kept: the application may serve its status).
    pub job_args: Vec<String>,
    /// The job's arguments the TaskManagers receive: as `job_args`, and without `--rest`, which
    /// only the JobManager serves.
    pub task_manager_args: Vec<String>,
}

/// A TaskManager's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskManagerOptions {
    /// The JobManager's address, `host:port` (a name is resolved at every attempt to join).
    pub join: String,
    /// How many subtask slots this TaskManager offers.
    pub slots: u32,
    /// The cluster directory (the certificate authority, copied from the JobManager's).
    pub cluster_dir: PathBuf,
    /// Where other TaskManagers reach this one's data channels (default `0.0.0.0:0`).
    pub bind: SocketAddr,
    /// The node id (default: `taskmanager-<host>-<pid>`).
    pub node_id: Option<String>,
    /// Timing.
    pub settings: ClusterSettings,
}

/// A command line that mixes or misses role flags, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the role flags out of `args` (the program name first).
///
/// # Errors
///
/// Both roles, a role flag without its role, a role without its required flags, or a value
/// that does not parse: the message names the flag.
pub fn parse(args: Vec<String>) -> Result<Launch, UsageError> {
    let mut rest = Vec::with_capacity(args.len());
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        rest.push(program);
    }
    let valued = [
        "--bind",
        "--rest",
        "--cluster-dir",
        "--join",
        "--slots",
        "--node-id",
        "--heartbeat-interval-ms",
        "--heartbeat-timeout-ms",
        "--slot-wait-timeout-ms",
    ];
    let mut rest_flag: Vec<String> = Vec::new();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            rest.push(arg);
            rest.extend(iter.by_ref());
            break;
        }
        if arg == "--jobmanager" || arg == "--taskmanager" {
            found.push((arg, None));
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        if valued.contains(&name.as_str()) {
            let value = match inline {
                Some(value) => value,
                None => iter
                    .next()
                    .ok_or_else(|| UsageError(format!("{name} needs a value")))?,
            };
            if name == "--rest" {
                rest_flag = vec![name.clone(), value.clone()];
            }
            found.push((name, Some(value)));
        } else {
            rest.push(arg);
        }
    }
    let has = |flag: &str| found.iter().any(|(name, _)| name == flag);
    let value = |flag: &str| {
        found
            .iter()
            .rev()
            .find(|(name, _)| name == flag)
            .and_then(|(_, v)| v.clone())
    };
    let address = |flag: &str| -> Result<Option<SocketAddr>, UsageError> {
        value(flag)
            .map(|v| {
                v.parse().map_err(|_| {
                    UsageError(format!(
                        "{flag} '{v}' is not an address like 127.0.0.1:6123"
                    ))
                })
            })
            .transpose()
    };
    let number = |flag: &str| -> Result<Option<u64>, UsageError> {
        value(flag)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| UsageError(format!("{flag} '{v}' is not a whole number")))
            })
            .transpose()
    };
    let mut settings = ClusterSettings::default();
    if let Some(ms) = number("--heartbeat-interval-ms")? {
        settings.heartbeat_interval_ms = ms.max(1);
    }
    if let Some(ms) = number("--heartbeat-timeout-ms")? {
        settings.heartbeat_timeout_ms = ms.max(1);
    }
    if let Some(ms) = number("--slot-wait-timeout-ms")? {
        settings.slot_wait_timeout_ms = ms;
    }
    if settings.heartbeat_timeout_ms <= settings.heartbeat_interval_ms {
        return Err(UsageError(format!(
            "--heartbeat-timeout-ms ({}) must be longer than --heartbeat-interval-ms ({})",
            settings.heartbeat_timeout_ms, settings.heartbeat_interval_ms
        )));
    }
    let cluster_dir = value("--cluster-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CLUSTER_DIR));
    match (has("--jobmanager"), has("--taskmanager")) {
        (true, true) => Err(UsageError(
            "--jobmanager and --taskmanager exclude each other".to_string(),
        )),
        (true, false) => {
            for flag in ["--join", "--slots", "--node-id"] {
                if has(flag) {
                    return Err(UsageError(format!("{flag} is a --taskmanager flag")));
                }
            }
            let bind = address("--bind")?
                .ok_or_else(|| UsageError("--jobmanager needs --bind ADDR".to_string()))?;
            let rest_addr = address("--rest")?;
            // The JobManager's application sees `--rest` (it serves the status); the
            // TaskManagers' do not.
            let mut job_args = rest.clone();
            job_args.extend(rest_flag);
            Ok(Launch::JobManager(JobManagerOptions {
                bind,
                rest: rest_addr,
                cluster_dir,
                settings,
                job_args,
                task_manager_args: rest,
            }))
        }
        (false, true) => {
            for flag in ["--rest", "--slot-wait-timeout-ms"] {
                if has(flag) {
                    return Err(UsageError(format!("{flag} is a --jobmanager flag")));
                }
            }
            if rest.len() > 1 {
                return Err(UsageError(format!(
                    "a task manager takes no job arguments (it receives them from the job \
                     manager), got {:?}",
                    &rest[1..]
                )));
            }
            let join = value("--join")
                .ok_or_else(|| UsageError("--taskmanager needs --join ADDR".to_string()))?;
            let port_ok = join
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(UsageError(format!(
                    "--join '{join}' is not an address like 127.0.0.1:6123 or jobmanager:6123"
                )));
            }
            let slots = number("--slots")?
                .ok_or_else(|| UsageError("--taskmanager needs --slots N".to_string()))?;
            let slots = u32::try_from(slots)
                .ok()
                .filter(|s| (1..=1024).contains(s))
                .ok_or_else(|| UsageError(format!("--slots {slots} is not between 1 and 1024")))?;
            Ok(Launch::TaskManager(TaskManagerOptions {
                join,
                slots,
                cluster_dir,
                bind: address("--bind")?.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                node_id: value("--node-id"),
                settings,
            }))
        }
        (false, false) => {
            for flag in [
                "--bind",
                "--join",
                "--slots",
                "--cluster-dir",
                "--node-id",
                "--heartbeat-interval-ms",
                "--heartbeat-timeout-ms",
                "--slot-wait-timeout-ms",
            ] {
                if has(flag) {
                    return Err(UsageError(format!(
                        "{flag} needs --jobmanager or --taskmanager"
                    )));
                }
            }
            // A local run keeps `--rest` for the application (its own status server).
            let mut local = rest;
            local.extend(rest_flag);
            Ok(Launch::Local(local))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn without_role_flags_everything_is_the_jobs() {
        assert_eq!(
            parse(args("wordcount --input f --parallelism 4")).unwrap(),
            Launch::Local(args("wordcount --input f --parallelism 4"))
        );
    }

    #[test]
    fn job_manager_flags_are_taken_out_and_rest_stays_on_the_job_manager() {
        let Launch::JobManager(options) = parse(args(
            "wc --input f --jobmanager --bind 127.0.0.1:6123 --rest=127.0.0.1:8081 --parallelism 4",
        ))
        .unwrap() else {
            panic!("not a job manager")
        };
        assert_eq!(options.bind, "127.0.0.1:6123".parse().unwrap());
        assert_eq!(options.rest, Some("127.0.0.1:8081".parse().unwrap()));
        assert_eq!(
            options.job_args,
            args("wc --input f --parallelism 4 --rest 127.0.0.1:8081")
        );
        assert_eq!(
            options.task_manager_args,
            args("wc --input f --parallelism 4")
        );
        assert_eq!(options.cluster_dir, PathBuf::from(DEFAULT_CLUSTER_DIR));
    }

    #[test]
    fn task_manager_needs_join_and_slots_and_takes_no_job_flags() {
        let Launch::TaskManager(options) = parse(args(
            "wc --taskmanager --join 127.0.0.1:6123 --slots 2 --cluster-dir /tmp/c",
        ))
        .unwrap() else {
            panic!("not a task manager")
        };
        assert_eq!(options.slots, 2);
        assert_eq!(options.cluster_dir, PathBuf::from("/tmp/c"));
        assert!(options.bind.ip().is_unspecified());
        assert!(parse(args("wc --taskmanager --slots 2")).is_err());
        assert!(parse(args("wc --taskmanager --join 127.0.0.1:1")).is_err());
        assert!(parse(args("wc --taskmanager --join 127.0.0.1:1 --slots 0")).is_err());
        assert!(
            parse(args(
                "wc --taskmanager --join 127.0.0.1:1 --slots 2 --input f"
            ))
            .is_err()
        );
        assert!(parse(args("wc --taskmanager --join jobmanager --slots 2")).is_err());
        let Launch::TaskManager(named) =
            parse(args("wc --taskmanager --join jobmanager:6123 --slots 1")).unwrap()
        else {
            panic!("not a task manager")
        };
        assert_eq!(named.join, "jobmanager:6123");
    }

    #[test]
    fn mixed_or_orphan_flags_are_usage_errors_naming_the_flag() {
        let error = parse(args("wc --jobmanager --taskmanager --bind 1.2.3.4:5")).unwrap_err();
        assert!(error.0.contains("exclude"), "{error}");
        let error = parse(args("wc --join 127.0.0.1:1")).unwrap_err();
        assert!(error.0.contains("--join"), "{error}");
        let error = parse(args("wc --jobmanager")).unwrap_err();
        assert!(error.0.contains("--bind"), "{error}");
        let error = parse(args("wc --jobmanager --bind nowhere")).unwrap_err();
        assert!(error.0.contains("nowhere"), "{error}");
        let error = parse(args("wc --jobmanager --bind")).unwrap_err();
        assert!(error.0.contains("needs a value"), "{error}");
        let error = parse(args(
            "wc --jobmanager --bind 127.0.0.1:1 --heartbeat-interval-ms 50 --heartbeat-timeout-ms 10",
        ))
        .unwrap_err();
        assert!(error.0.contains("longer"), "{error}");
    }

    #[test]
    fn a_local_run_keeps_rest_for_the_application() {
        assert_eq!(
            parse(args("wc --rest 127.0.0.1:8081 --input f")).unwrap(),
            Launch::Local(args("wc --input f --rest 127.0.0.1:8081"))
        );
    }
}
