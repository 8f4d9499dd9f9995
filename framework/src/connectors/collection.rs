//! Sources over in-memory data: a collection and an index generator.

use crate::api::{SourceContext, SourceFunction, SourcePoll};
use crate::operator::{FunctionError, RuntimeContext};

/// Emits the elements of a vector in order (non-parallel). Position: the index of the next
/// element.
#[derive(Debug, Clone)]
pub struct CollectionSource<T> {
    elements: Vec<T>,
    next: usize,
}

impl<T> CollectionSource<T> {
    /// A source of `elements`.
    pub fn new(elements: Vec<T>) -> Self {
        Self { elements, next: 0 }
    }
}

/// Encodes a `u64` position.
fn encode_position(position: u64) -> Vec<u8> {
    position.to_le_bytes().to_vec()
}

/// Decodes a `u64` position, with a clear error for a corrupt one.
pub(crate) fn decode_position(bytes: &[u8], what: &str) -> Result<u64, FunctionError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("{what}: position must be 8 bytes, got {}", bytes.len()))?;
    Ok(u64::from_le_bytes(array))
}

impl<T: Clone + Send + 'static> SourceFunction<T> for CollectionSource<T> {
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        while ctx.remaining() > 0 {
            let Some(element) = self.elements.get(self.next) else {
                return Ok(SourcePoll::Finished);
            };
            ctx.collect(element.clone());
            self.next += 1;
        }
        Ok(if self.next < self.elements.len() {
            SourcePoll::MoreAvailable
        } else {
            SourcePoll::Finished
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        Ok(Some(encode_position(self.next as u64)))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        let next = decode_position(position, "collection source")?;
        if next > self.elements.len() as u64 {
            return Err(format!(
                "collection source: position {next} is past the end ({} elements)",
                self.elements.len()
            )
            .into());
        }
        self.next = next as usize;
        Ok(())
    }
}

/// Emits `generator(g)` for `g` in `0..count` (or forever), split over its parallel instances:
/// subtask `j` of `p` emits `g = s * p + j` for `s = 0, 1, ...`. Position: `s`.
#[derive(Debug, Clone)]
pub struct GeneratorSource<F> {
    count: Option<u64>,
    generator: F,
    next_step: u64,
    subtask_index: u64,
    parallelism: u64,
}

impl<F> GeneratorSource<F> {
    /// A generator of `count` elements (`None`: unbounded).
    pub fn new(count: Option<u64>, generator: F) -> Self {
        Self {
            count,
            generator,
            next_step: 0,
            subtask_index: 0,
            parallelism: 1,
        }
    }
}

impl<F> GeneratorSource<F> {
    /// The first step at or past the end of a generator of `count` elements: the number of
    /// indices `s * p + j` below `count`.
    fn end_step(&self, count: u64) -> u64 {
        count
            .saturating_sub(self.subtask_index)
            .div_ceil(self.parallelism)
    }
}

impl<T, F> SourceFunction<T> for GeneratorSource<F>
where
    F: Fn(u64) -> T + Clone + Send + 'static,
{
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.subtask_index = u64::from(ctx.subtask_index);
        self.parallelism = u64::from(ctx.parallelism);
        Ok(())
    }

    #[inline]
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        // How many steps this subtask has left: those `s` with `s * p + j < count`. Knowing it
        // up front keeps the bound check out of the loop over the budget.
        let steps_left = match self.count {
            Some(count) => self.end_step(count).saturating_sub(self.next_step),
            None => u64::MAX,
        };
        let steps = steps_left.min(ctx.remaining() as u64);
        let mut index = self.next_step * self.parallelism + self.subtask_index;
        for _ in 0..steps {
            ctx.collect((self.generator)(index));
            // Past the last index this may wrap; the value is then not used.
            index = index.wrapping_add(self.parallelism);
        }
        self.next_step += steps;
        Ok(if steps == steps_left {
            SourcePoll::Finished
        } else {
            SourcePoll::MoreAvailable
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        Ok(Some(encode_position(self.next_step)))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        self.next_step = decode_position(position, "generator source")?;
        Ok(())
    }
}

crate::api::operator::impl_plain_operator!(CollectionSource<T>; T);
crate::api::operator::impl_plain_operator!(GeneratorSource<F>; F);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::testing::poll_source as poll;

    #[test]
    fn collection_position_round_trip() {
        let mut source = CollectionSource::new(vec![1, 2, 3, 4, 5]);
        let (first, state) = poll(&mut source, 2);
        assert_eq!((first, state), (vec![1, 2], SourcePoll::MoreAvailable));
        let position = source.snapshot_position().unwrap().unwrap();
        let (rest, state) = poll(&mut source, 10);
        assert_eq!((rest, state), (vec![3, 4, 5], SourcePoll::Finished));

        let mut restored = CollectionSource::new(vec![1, 2, 3, 4, 5]);
        restored.restore_position(&position).unwrap();
        assert_eq!(poll(&mut restored, 10).0, vec![3, 4, 5]);
        assert!(
            restored.restore_position(&[1, 2]).is_err(),
            "corrupt position"
        );
        assert!(
            restored.restore_position(&9u64.to_le_bytes()).is_err(),
            "past the end"
        );
    }

    #[test]
    fn generator_splits_indices_over_subtasks_for_any_budget() {
        for parallelism in 1..4u64 {
            for subtask_index in 0..parallelism {
                for count in [0, 1, 2, 7, 10] {
                    for budget in [1, 2, 3, 100] {
                        let mut source = GeneratorSource::new(Some(count), |g| g);
                        source.subtask_index = subtask_index;
                        source.parallelism = parallelism;
                        let mut emitted = Vec::new();
                        loop {
                            let (records, state) = poll(&mut source, budget);
                            assert!(records.len() <= budget);
                            emitted.extend(records);
                            if state == SourcePoll::Finished {
                                break;
                            }
                        }
                        let expected: Vec<u64> = (0..count)
                            .filter(|g| g % parallelism == subtask_index)
                            .collect();
                        assert_eq!(emitted, expected, "{subtask_index}/{parallelism}, {count}");
                    }
                }
            }
        }
    }

    #[test]
    fn generator_position_round_trip() {
        let mut source = GeneratorSource::new(Some(10), |g| g * 2);
        let (first, _) = poll(&mut source, 4);
        assert_eq!(first, vec![0, 2, 4, 6]);
        let position = source.snapshot_position().unwrap().unwrap();
        let mut restored = GeneratorSource::new(Some(10), |g| g * 2);
        restored.restore_position(&position).unwrap();
        let (rest, state) = poll(&mut restored, 100);
        assert_eq!(rest, vec![8, 10, 12, 14, 16, 18]);
        assert_eq!(state, SourcePoll::Finished);
    }
}
