//! A source wrapper that emits at most a given number of records per second of processing time.

use crate::api::functions::{SourceContext, SourceFunction, SourcePoll};
use crate::operator::{FunctionError, RuntimeContext};

/// Emits the records of `inner` at most `records_per_second` per second of processing time
/// (per subtask), measured from the first poll. While over the rate it reports
/// [`SourcePoll::Idle`], so the subtask polls again after the idle interval; checkpoints,
/// credits and cancellation go on meanwhile. Positions are the inner source's, and so are
/// whether they can be restored at another parallelism and whether the source is parallel
/// ([`SourceFunction::is_parallel`]).
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::{CollectionSource, RateLimitedSource};
///
/// // At most 500 records per second.
/// let source = RateLimitedSource::new(CollectionSource::new((0..10_000u64).collect()), 500);
/// # let _ = source;
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitedSource<S> {
    inner: S,
    records_per_second: u64,
    start_ms: Option<i64>,
    emitted: u64,
}

impl<S> RateLimitedSource<S> {
    /// Wraps `inner`; `records_per_second` of 0 is treated as 1.
    pub fn new(inner: S, records_per_second: u64) -> Self {
        Self {
            inner,
            records_per_second: records_per_second.max(1),
            start_ms: None,
            emitted: 0,
        }
    }

    /// How many records the rate allows by `now_ms` in total.
    fn allowed_by(&self, now_ms: i64, start_ms: i64) -> u64 {
        let elapsed = u64::try_from(now_ms.saturating_sub(start_ms)).unwrap_or(0);
        // One record right away, then the rate.
        1 + (u128::from(elapsed) * u128::from(self.records_per_second) / 1000)
            .min(u128::from(u64::MAX)) as u64
    }
}

impl<T, S: SourceFunction<T>> SourceFunction<T> for RateLimitedSource<S> {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }

    fn is_parallel(&self) -> bool {
        self.inner.is_parallel()
    }

    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        let now = ctx.current_processing_time();
        let start = *self.start_ms.get_or_insert(now);
        let budget = self.allowed_by(now, start).saturating_sub(self.emitted);
        if budget == 0 {
            return Ok(SourcePoll::Idle);
        }
        ctx.limit_budget(usize::try_from(budget).unwrap_or(usize::MAX));
        let before = ctx.remaining();
        let poll = self.inner.poll_next(ctx)?;
        self.emitted += (before - ctx.remaining()) as u64;
        Ok(match poll {
            // Spent the rate's budget: wait for the next idle poll rather than spinning.
            SourcePoll::MoreAvailable if ctx.remaining() == 0 => SourcePoll::Idle,
            other => other,
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        self.inner.snapshot_position()
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        self.inner.restore_position(position)
    }

    fn restore_rescaled_positions(&mut self, positions: &[Vec<u8>]) -> Result<(), FunctionError> {
        self.inner.restore_rescaled_positions(positions)
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.inner.close()
    }
}

/// The pacing wrapper is transparent: identity and state fields are the inner source's.
impl<S: crate::api::Operator> crate::api::Operator for RateLimitedSource<S> {
    fn default_uid() -> Option<&'static str> {
        S::default_uid()
    }
    fn state_schema(&self) -> crate::state::StateSchema {
        self.inner.state_schema()
    }
    fn restore_state_fields(
        &mut self,
        ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), crate::operator::FunctionError> {
        self.inner.restore_state_fields(ctx)
    }
    fn snapshot_state_fields(
        &self,
        ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), crate::operator::FunctionError> {
        self.inner.snapshot_state_fields(ctx)
    }
}

impl<S: crate::api::Unkeyed> crate::api::Unkeyed for RateLimitedSource<S> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::CollectionSource;
    use crate::operator::testing::poll_source;

    #[test]
    fn holds_back_until_time_passes() {
        // The test harness polls at processing time 0: one record, then nothing until time moves.
        let mut source = RateLimitedSource::new(CollectionSource::new((0..100u64).collect()), 1000);
        let (first, poll) = poll_source(&mut source, 50);
        assert_eq!(first, vec![0]);
        assert_eq!(poll, SourcePoll::Idle);
        let (second, poll) = poll_source(&mut source, 50);
        assert!(second.is_empty());
        assert_eq!(poll, SourcePoll::Idle);
    }
}
