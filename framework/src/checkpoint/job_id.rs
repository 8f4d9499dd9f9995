//! The id of one run of a job (Flink's `JobID`): every run gets a new one, and its checkpoints
//! live under `<checkpoint dir>/<job id>/`, so a run restarts only from its own checkpoints.
//!
//! The id is chosen by the runtime when the job is submitted (from the system time and the
//! process id, the one place it reads them), or set by the application
//! ([`ExecutionConfig::job_id`](crate::api::ExecutionConfig::job_id)), as the simulator does
//! from its seed so runs are reproducible.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::state::splitmix64;

/// The id of one run of a job: 128 bits, written as 32 lowercase hex digits.
///
/// # Examples
///
/// ```
/// use eichhorn::checkpoint::JobId;
///
/// let id: JobId = "00000000000000000000000000002a2a".parse().unwrap();
/// assert_eq!(id, JobId(0x2a2a));
/// assert_eq!(id.to_string(), "00000000000000000000000000002a2a");
/// assert!("not-a-job-id".parse::<JobId>().is_err());
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct JobId(pub u128);

impl JobId {
    /// A job id derived from `seed` alone (the splitmix64 finalizer on two words): the same
    /// seed gives the same id, for reproducible runs (tests, the simulator).
    pub fn from_seed(seed: u64) -> Self {
        let high = splitmix64(seed);
        let low = splitmix64(seed ^ 0x6a09_e667_f3bc_c908);
        Self((u128::from(high) << 64) | u128::from(low))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for JobId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{text}' is not a job id (32 hex digits)"));
        }
        u128::from_str_radix(text, 16)
            .map(Self)
            .map_err(|e| format!("'{text}' is not a job id: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for seed in [0, 1, 42, u64::MAX] {
            let id = JobId::from_seed(seed);
            assert_eq!(id.to_string().len(), 32);
            assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        }
        assert_ne!(JobId::from_seed(1), JobId::from_seed(2));
        assert!("0123".parse::<JobId>().is_err());
        assert!("g0000000000000000000000000000000".parse::<JobId>().is_err());
    }
}
