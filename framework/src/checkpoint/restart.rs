//! Restart strategies: whether, and after how long, a failed job restarts (Flink's
//! `RestartStrategy`).
//!
//! A pure core: the JobManager reports each failure with the current time and gets a decision;
//! it never reads a clock itself.
//!
//! ## Invariants
//!
//! - `None` never restarts; `FixedDelay` restarts at most `attempts` times in total.
//! - `FailureRate` restarts unless more than `max_failures` failures fall within one `interval_ms`.
//! - `ExponentialDelay` delays grow by `multiplier` up to `max_delay_ms` and fall back to
//!   `initial_delay_ms` after `reset_after_ms` without failure.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How a job reacts to a failed subtask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RestartStrategy {
    /// Fail the job at the first failure.
    None,
    /// Restart up to `attempts` times, waiting `delay_ms` before each restart.
    FixedDelay {
        /// Restarts allowed over the job's life.
        attempts: u32,
        /// Wait before each restart, in milliseconds.
        delay_ms: u64,
    },
    /// Restart with a delay that doubles (by `multiplier`) after each failure.
    ExponentialDelay {
        /// The first delay, in milliseconds.
        initial_delay_ms: u64,
        /// The largest delay, in milliseconds.
        max_delay_ms: u64,
        /// The factor between consecutive delays (at least 1).
        multiplier: f64,
        /// After this long without a failure the delay starts over, in milliseconds.
        reset_after_ms: u64,
        /// Restarts allowed over the job's life (Flink: unlimited by default).
        attempts: u32,
    },
    /// Restart unless more than `max_failures` failures happen within `interval_ms`.
    FailureRate {
        /// Failures tolerated per interval.
        max_failures: u32,
        /// The measuring interval, in milliseconds.
        interval_ms: u64,
        /// Wait before each restart, in milliseconds.
        delay_ms: u64,
    },
}

impl RestartStrategy {
    /// Flink's default when checkpointing is enabled: fixed delay, effectively unlimited
    /// attempts, 1 s apart.
    pub fn default_with_checkpointing() -> Self {
        Self::FixedDelay {
            attempts: u32::MAX,
            delay_ms: 1000,
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    ///
    /// A message naming the bad parameter.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::ExponentialDelay {
                initial_delay_ms,
                max_delay_ms,
                multiplier,
                ..
            } => {
                if !multiplier.is_finite() || *multiplier < 1.0 {
                    return Err(format!(
                        "exponential-delay multiplier {multiplier} must be at least 1"
                    ));
                }
                if initial_delay_ms > max_delay_ms {
                    return Err(format!(
                        "exponential-delay initial delay {initial_delay_ms} ms exceeds the \
                         maximum {max_delay_ms} ms"
                    ));
                }
                Ok(())
            }
            Self::FailureRate { interval_ms, .. } if *interval_ms == 0 => {
                Err("failure-rate interval must be positive".to_string())
            }
            _ => Ok(()),
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this many milliseconds.
    RestartAfter(u64),
    /// Give up: the job fails.
    Fail,
}

/// Applies a [`RestartStrategy`] to a job's failures.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    /// Failure times within the failure-rate interval.
    recent: VecDeque<i64>,
    /// Exponential delay: the next delay and the last failure time.
    next_delay_ms: u64,
    last_failure_ms: Option<i64>,
}

impl RestartTracker {
    /// A tracker for `strategy`.
    pub fn new(strategy: RestartStrategy) -> Self {
        let next_delay_ms = match &strategy {
            RestartStrategy::ExponentialDelay {
                initial_delay_ms, ..
            } => *initial_delay_ms,
            _ => 0,
        };
        Self {
            strategy,
            restarts: 0,
            recent: VecDeque::new(),
            next_delay_ms,
            last_failure_ms: None,
        }
    }

    /// How many restarts were granted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// A failure happened at `now_ms`: restart (after a delay) or fail.
    pub fn on_failure(&mut self, now_ms: i64) -> RestartDecision {
        let decision = match &self.strategy {
            RestartStrategy::None => RestartDecision::Fail,
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                if self.restarts < *attempts {
                    RestartDecision::RestartAfter(*delay_ms)
                } else {
                    RestartDecision::Fail
                }
            }
            RestartStrategy::ExponentialDelay {
                initial_delay_ms,
                max_delay_ms,
                multiplier,
                reset_after_ms,
                attempts,
            } => {
                if self.restarts >= *attempts {
                    RestartDecision::Fail
                } else {
                    let quiet = self.last_failure_ms.is_some_and(|last| {
                        now_ms.saturating_sub(last)
                            >= i64::try_from(*reset_after_ms).unwrap_or(i64::MAX)
                    });
                    if quiet {
                        self.next_delay_ms = *initial_delay_ms;
                    }
                    let delay = self.next_delay_ms.min(*max_delay_ms);
                    let grown = (delay as f64 * multiplier).min(*max_delay_ms as f64);
                    self.next_delay_ms = grown as u64;
                    RestartDecision::RestartAfter(delay)
                }
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval_ms,
                delay_ms,
            } => {
                let window = i64::try_from(*interval_ms).unwrap_or(i64::MAX);
                self.recent.push_back(now_ms);
                while self
                    .recent
                    .front()
                    .is_some_and(|t| now_ms.saturating_sub(*t) >= window)
                {
                    self.recent.pop_front();
                }
                if self.recent.len() as u64 > u64::from(*max_failures) {
                    RestartDecision::Fail
                } else {
                    RestartDecision::RestartAfter(*delay_ms)
                }
            }
        };
        self.last_failure_ms = Some(now_ms);
        if matches!(decision, RestartDecision::RestartAfter(_)) {
            self.restarts += 1;
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_never_restarts() {
        let mut t = RestartTracker::new(RestartStrategy::None);
        assert_eq!(t.on_failure(0), RestartDecision::Fail);
    }

    #[test]
    fn fixed_delay_counts_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay {
            attempts: 2,
            delay_ms: 50,
        });
        assert_eq!(t.on_failure(0), RestartDecision::RestartAfter(50));
        assert_eq!(t.on_failure(10), RestartDecision::RestartAfter(50));
        assert_eq!(t.on_failure(20), RestartDecision::Fail);
        assert_eq!(t.restarts(), 2);
    }

    #[test]
    fn exponential_delay_grows_caps_and_resets() {
        let mut t = RestartTracker::new(RestartStrategy::ExponentialDelay {
            initial_delay_ms: 10,
            max_delay_ms: 35,
            multiplier: 2.0,
            reset_after_ms: 1000,
            attempts: u32::MAX,
        });
        let delays: Vec<_> = [0, 1, 2, 3].iter().map(|now| t.on_failure(*now)).collect();
        assert_eq!(
            delays,
            vec![
                RestartDecision::RestartAfter(10),
                RestartDecision::RestartAfter(20),
                RestartDecision::RestartAfter(35),
                RestartDecision::RestartAfter(35),
            ]
        );
        assert_eq!(t.on_failure(5000), RestartDecision::RestartAfter(10));
    }

    #[test]
    fn failure_rate_fails_when_too_many_in_interval() {
        let mut t = RestartTracker::new(RestartStrategy::FailureRate {
            max_failures: 2,
            interval_ms: 100,
            delay_ms: 5,
        });
        assert_eq!(t.on_failure(0), RestartDecision::RestartAfter(5));
        assert_eq!(t.on_failure(50), RestartDecision::RestartAfter(5));
        // The first failure left the interval: still two within 100 ms.
        assert_eq!(t.on_failure(120), RestartDecision::RestartAfter(5));
        assert_eq!(t.on_failure(130), RestartDecision::Fail);
    }

    #[test]
    fn validation_names_the_parameter() {
        let bad = RestartStrategy::ExponentialDelay {
            initial_delay_ms: 10,
            max_delay_ms: 5,
            multiplier: 2.0,
            reset_after_ms: 1,
            attempts: 1,
        };
        assert!(bad.validate().unwrap_err().contains("initial delay"));
    }
}
