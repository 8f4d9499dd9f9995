//! Deliberate bugs for the simulator, compiled only with the `sim-sabotage` feature.
//!
//! The simulator's oracles (exactly-once, no loss or duplication per key, checkpoint
//! consistency, liveness) are only worth something if they can fail. With this feature the
//! framework carries a handful of tiny hooks, each a classic bug of a checkpointing stream
//! processor, switched on at run time by [`set`]: `eichhorn-sim --features sabotage` then shows
//! that a sweep catches each one.
//!
//! ## Design
//!
//! The choice is **thread-local**: a simulation runs the whole job on one thread (a
//! current-thread tokio runtime with every subtask on it), so the sabotage reaches exactly the
//! run that asked for it, and tests running in parallel on other threads stay clean. Without
//! the feature none of this exists and the hooks compile to nothing: production builds pay
//! nothing.

use std::cell::Cell;

/// A deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Sabotage {
    /// A multi-input subtask takes its snapshot and forwards the barrier as soon as the first
    /// input delivers it, without blocking the other inputs until theirs arrive: records of
    /// the slower inputs from before their barrier miss the snapshot.
    BarrierBeforeAlignment,
    /// A restored source ignores its checkpointed position and starts from the beginning.
    SkipSourceRestore,
    /// A two-phase-commit sink commits its transaction at the barrier, before the checkpoint
    /// completes.
    CommitBeforeCheckpoint,
    /// A sender loses one credit in every [`DROP_CREDIT_EVERY`] it is granted.
    DropCredit,
}

/// [`Sabotage::DropCredit`] drops one credit grant in this many.
pub const DROP_CREDIT_EVERY: u64 = 16;

impl Sabotage {
    /// Every sabotage.
    pub const ALL: [Self; 4] = [
        Self::BarrierBeforeAlignment,
        Self::SkipSourceRestore,
        Self::CommitBeforeCheckpoint,
        Self::DropCredit,
    ];

    /// Its name on the simulator's command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::BarrierBeforeAlignment => "barrier_before_alignment",
            Self::SkipSourceRestore => "skip_source_restore",
            Self::CommitBeforeCheckpoint => "commit_before_checkpoint",
            Self::DropCredit => "drop_credit",
        }
    }

    /// The sabotage called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Sabotage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static ACTIVE: Cell<Option<Sabotage>> = const { Cell::new(None) };
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

/// Switches `sabotage` on (or every sabotage off with `None`) for jobs run on this thread from
/// now on, and restarts its counter.
pub fn set(sabotage: Option<Sabotage>) {
    ACTIVE.with(|a| a.set(sabotage));
    COUNTER.with(|c| c.set(0));
}

/// The sabotage switched on for this thread.
pub fn active() -> Option<Sabotage> {
    ACTIVE.with(Cell::get)
}

/// Whether `sabotage` is on for this thread.
pub(crate) fn is(sabotage: Sabotage) -> bool {
    active() == Some(sabotage)
}

/// Whether this credit grant is the one in [`DROP_CREDIT_EVERY`] that
/// [`Sabotage::DropCredit`] loses.
pub(crate) fn drop_this_credit() -> bool {
    if !is(Sabotage::DropCredit) {
        return false;
    }
    COUNTER.with(|c| {
        let n = c.get() + 1;
        c.set(n);
        n % DROP_CREDIT_EVERY == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_choice_is_per_thread() {
        for s in Sabotage::ALL {
            assert_eq!(Sabotage::from_name(s.name()), Some(s));
        }
        set(Some(Sabotage::DropCredit));
        let dropped = (0..DROP_CREDIT_EVERY * 3)
            .filter(|_| drop_this_credit())
            .count();
        assert_eq!(dropped, 3);
        assert_eq!(std::thread::spawn(active).join().unwrap(), None);
        set(None);
        assert!(!drop_this_credit());
    }
}
