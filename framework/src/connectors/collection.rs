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
/// subtask `j` of `p` emits `g = j, j + p, j + 2p, ...`.
///
/// Its position is the set of indices still to emit, as arithmetic progressions, so a
/// checkpoint restores at any parallelism without loss or duplication
/// ([`SourceFunction::restore_rescaled_positions`]): the progressions of all old subtasks are
/// dealt out round-robin when they divide evenly over the new subtasks, and otherwise every
/// progression is split into one finer progression per new subtask. A subtask with several
/// progressions emits their indices in increasing order.
#[derive(Debug, Clone)]
pub struct GeneratorSource<F> {
    count: Option<u64>,
    generator: F,
    /// The indices still to emit, in the order they were handed out; `(j, p)` after `open`.
    splits: Vec<Progression>,
    /// This instance's index `j`, set by `open`.
    subtask_index: u64,
    /// The source's parallelism `p`, set by `open`.
    parallelism: u64,
}

/// The indices `next, next + stride, next + 2 * stride, ...` (below the generator's count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progression {
    next: u64,
    stride: u64,
}

/// The first byte of an encoded generator position (the format's version). An earlier
/// format was 8 bytes (the subtask's step), which no length of this one matches.
const GENERATOR_POSITION_V1: u8 = 1;

impl<F> GeneratorSource<F> {
    /// A generator of `count` elements (`None`: unbounded).
    pub fn new(count: Option<u64>, generator: F) -> Self {
        Self {
            count,
            generator,
            splits: vec![Progression { next: 0, stride: 1 }],
            subtask_index: 0,
            parallelism: 1,
        }
    }

    /// Whether `split` has indices left to emit.
    fn is_live(&self, split: Progression) -> bool {
        self.count.is_none_or(|count| split.next < count)
    }

    /// How many indices `split` has left (`u64::MAX` for an unbounded generator).
    fn steps_left(&self, split: Progression) -> u64 {
        match self.count {
            Some(count) => count.saturating_sub(split.next).div_ceil(split.stride),
            None => u64::MAX,
        }
    }

    /// The position: a version byte, then `next` and `stride` of every progression with indices
    /// left (little-endian `u64`s).
    fn encode_position(&self) -> Vec<u8> {
        let live: Vec<Progression> = self
            .splits
            .iter()
            .copied()
            .filter(|s| self.is_live(*s))
            .collect();
        let mut bytes = Vec::with_capacity(1 + 16 * live.len());
        bytes.push(GENERATOR_POSITION_V1);
        for split in live {
            bytes.extend_from_slice(&split.next.to_le_bytes());
            bytes.extend_from_slice(&split.stride.to_le_bytes());
        }
        bytes
    }

    /// Decodes a position of [`GeneratorSource::encode_position`].
    fn decode_position(bytes: &[u8]) -> Result<Vec<Progression>, FunctionError> {
        let Some((&GENERATOR_POSITION_V1, body)) = bytes.split_first() else {
            return Err(format!(
                "generator source: a position of {} bytes is not one this version wrote",
                bytes.len()
            )
            .into());
        };
        if body.len() % 16 != 0 {
            return Err(format!(
                "generator source: position of {} bytes is truncated",
                bytes.len()
            )
            .into());
        }
        body.chunks_exact(16)
            .map(|chunk| {
                let next = decode_position(&chunk[..8], "generator source")?;
                let stride = decode_position(&chunk[8..], "generator source")?;
                if stride == 0 {
                    return Err("generator source: a progression with stride 0".into());
                }
                Ok(Progression { next, stride })
            })
            .collect()
    }
}

impl<T, F> SourceFunction<T> for GeneratorSource<F>
where
    F: Fn(u64) -> T + Clone + Send + 'static,
{
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.subtask_index = u64::from(ctx.subtask_index);
        self.parallelism = u64::from(ctx.parallelism.max(1));
        self.splits = vec![Progression {
            next: self.subtask_index,
            stride: self.parallelism,
        }];
        Ok(())
    }

    fn is_parallel(&self) -> bool {
        true
    }

    #[inline]
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        if let [split] = self.splits.as_slice() {
            let split = *split;
            // Knowing up front how many indices are left keeps the bound check out of the loop
            // over the budget.
            let steps_left = self.steps_left(split);
            let steps = steps_left.min(ctx.remaining() as u64);
            let mut index = split.next;
            for _ in 0..steps {
                ctx.collect((self.generator)(index));
                // Past the last index this may wrap; the value is then not used.
                index = index.wrapping_add(split.stride);
            }
            self.splits[0].next = split
                .next
                .saturating_add(steps.saturating_mul(split.stride));
            return Ok(if steps == steps_left {
                SourcePoll::Finished
            } else {
                SourcePoll::MoreAvailable
            });
        }
        // Several progressions (after a rescale): the smallest index first.
        while ctx.remaining() > 0 {
            let smallest = (0..self.splits.len())
                .filter(|i| self.is_live(self.splits[*i]))
                .min_by_key(|i| self.splits[*i].next);
            let Some(i) = smallest else {
                return Ok(SourcePoll::Finished);
            };
            let split = &mut self.splits[i];
            let index = split.next;
            split.next = split.next.saturating_add(split.stride);
            ctx.collect((self.generator)(index));
        }
        Ok(if self.splits.iter().any(|s| self.is_live(*s)) {
            SourcePoll::MoreAvailable
        } else {
            SourcePoll::Finished
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        Ok(Some(self.encode_position()))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        if position.len() == 8 {
            // An earlier version's position: the step `s` of index `s * p + j`.
            let step = decode_position(position, "generator source")?;
            self.splits = vec![Progression {
                next: step
                    .saturating_mul(self.parallelism)
                    .saturating_add(self.subtask_index),
                stride: self.parallelism,
            }];
            return Ok(());
        }
        self.splits = Self::decode_position(position)?;
        Ok(())
    }

    fn restore_rescaled_positions(&mut self, positions: &[Vec<u8>]) -> Result<(), FunctionError> {
        let (index, parallelism) = (self.subtask_index, self.parallelism);
        let mut all = Vec::new();
        for position in positions {
            if position.len() == 8 {
                return Err(
                    "generator source: positions of an earlier version restore only at \
                            the parallelism they were taken with"
                        .into(),
                );
            }
            all.extend(
                Self::decode_position(position)?
                    .into_iter()
                    .filter(|s| self.is_live(*s)),
            );
        }
        let parallelism_usize = usize::try_from(parallelism)
            .map_err(|_| "generator source: parallelism does not fit in memory")?;
        self.splits = if all.len() % parallelism_usize == 0 {
            // Whole progressions, dealt out round-robin: no finer progressions needed.
            all.into_iter()
                .skip(index as usize)
                .step_by(parallelism_usize)
                .collect()
        } else {
            // Every progression split into one finer progression per new subtask.
            all.into_iter()
                .map(|s| Progression {
                    next: s.next.saturating_add(index.saturating_mul(s.stride)),
                    stride: s.stride.saturating_mul(parallelism),
                })
                .filter(|s| self.is_live(*s))
                .collect()
        };
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

    fn context(subtask_index: u64, parallelism: u64) -> RuntimeContext {
        RuntimeContext {
            job_name: "test".into(),
            job_id: crate::checkpoint::JobId(7),
            operator_name: "Source: Generator".into(),
            uid: None,
            subtask_index: subtask_index as u32,
            parallelism: parallelism as u32,
            max_parallelism: 128,
            attempt_number: 0,
            metrics: crate::metrics::MetricGroup::detached(),
        }
    }

    /// An opened generator of `count` indices (emitting the index itself) at `j` of `p`.
    fn generator(
        count: Option<u64>,
        j: u64,
        p: u64,
    ) -> GeneratorSource<impl Fn(u64) -> u64 + Clone + Send + 'static> {
        let mut source = GeneratorSource::new(count, |g| g);
        SourceFunction::<u64>::open(&mut source, &context(j, p)).unwrap();
        source
    }

    /// Polls with `budget` until the source finished or `polls` polls were made.
    fn drain<S: SourceFunction<u64>>(source: &mut S, budget: usize, polls: usize) -> Vec<u64> {
        let mut emitted = Vec::new();
        for _ in 0..polls {
            let (records, state) = poll(source, budget);
            assert!(records.len() <= budget);
            emitted.extend(records);
            if state == SourcePoll::Finished {
                break;
            }
        }
        emitted
    }

    #[test]
    fn generator_splits_indices_over_subtasks_for_any_budget() {
        for parallelism in 1..4u64 {
            for subtask_index in 0..parallelism {
                for count in [0, 1, 2, 7, 10] {
                    for budget in [1, 2, 3, 100] {
                        let mut source = generator(Some(count), subtask_index, parallelism);
                        let emitted = drain(&mut source, budget, usize::MAX);
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
        // Finished: the position says so, and a restore emits nothing more.
        let finished = restored.snapshot_position().unwrap().unwrap();
        let mut again = GeneratorSource::new(Some(10), |g| g * 2);
        again.restore_position(&finished).unwrap();
        assert_eq!(poll(&mut again, 100), (vec![], SourcePoll::Finished));
    }

    #[test]
    fn generator_restores_an_earlier_versions_step_position() {
        // Subtask 1 of 3 had emitted steps 0 and 1 (indices 1 and 4).
        let mut source = generator(Some(12), 1, 3);
        source.restore_position(&2u64.to_le_bytes()).unwrap();
        assert_eq!(drain(&mut source, 100, 10), vec![7, 10]);
        let mut rescaled = generator(Some(12), 0, 2);
        let error = rescaled
            .restore_rescaled_positions(&[2u64.to_le_bytes().to_vec()])
            .unwrap_err();
        assert!(error.to_string().contains("earlier version"), "{error}");
    }

    #[test]
    fn generator_rejects_corrupt_positions() {
        let mut source = generator(Some(10), 0, 1);
        for bad in [&[][..], &[9, 0][..], &[1, 0, 0][..]] {
            assert!(source.restore_position(bad).is_err(), "{bad:?}");
            assert!(
                source.restore_rescaled_positions(&[bad.to_vec()]).is_err(),
                "{bad:?}"
            );
        }
        let mut zero_stride = vec![GENERATOR_POSITION_V1];
        zero_stride.extend_from_slice(&3u64.to_le_bytes());
        zero_stride.extend_from_slice(&0u64.to_le_bytes());
        let error = source.restore_position(&zero_stride).unwrap_err();
        assert!(error.to_string().contains("stride 0"), "{error}");
    }

    /// Runs `count` indices at each parallelism of `scales` in turn: every stage emits a part
    /// (budget `budget`, `polls` polls per subtask), snapshots, and the next stage restores the
    /// positions rescaled. Returns everything emitted, the last stage run to the end.
    fn rescaled_run(count: u64, scales: &[u64], budget: usize, polls: usize) -> Vec<u64> {
        let mut emitted = Vec::new();
        let mut positions: Option<Vec<Vec<u8>>> = None;
        for (stage, &parallelism) in scales.iter().enumerate() {
            let last = stage + 1 == scales.len();
            let mut next_positions = Vec::new();
            for j in 0..parallelism {
                let mut source = generator(Some(count), j, parallelism);
                if let Some(old) = &positions {
                    if old.len() as u64 == parallelism {
                        source.restore_position(&old[j as usize]).unwrap();
                    } else {
                        source.restore_rescaled_positions(old).unwrap();
                    }
                }
                emitted.extend(drain(
                    &mut source,
                    budget,
                    if last { usize::MAX } else { polls },
                ));
                next_positions.push(source.snapshot_position().unwrap().unwrap());
            }
            positions = Some(next_positions);
        }
        emitted
    }

    #[test]
    fn generator_rescales_without_loss_or_duplication() {
        for count in [0, 1, 5, 17, 64] {
            for scales in [
                &[2, 3][..],
                &[2, 1],
                &[3, 1],
                &[3, 2],
                &[1, 4],
                &[4, 2, 3],
                &[2, 3, 5, 1],
                &[3, 3, 2, 2],
            ] {
                for (budget, polls) in [(1, 1), (2, 2), (3, 1), (100, 1), (1, 0)] {
                    let mut emitted = rescaled_run(count, scales, budget, polls);
                    emitted.sort_unstable();
                    assert_eq!(
                        emitted,
                        (0..count).collect::<Vec<_>>(),
                        "count {count}, parallelism {scales:?}, budget {budget} x {polls}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_rescaled_generator_emits_its_indices_in_order_and_shares_them_evenly() {
        // Two old subtasks at steps 1 and 2 (indices 0 and 1, 3 emitted), on to three.
        let mut old = [generator(None, 0, 2), generator(None, 1, 2)];
        drain(&mut old[0], 1, 1);
        drain(&mut old[1], 2, 1);
        let positions: Vec<Vec<u8>> = old
            .iter_mut()
            .map(|s| {
                SourceFunction::<u64>::snapshot_position(s)
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let mut shares = Vec::new();
        for j in 0..3 {
            let mut source = generator(None, j, 3);
            source.restore_rescaled_positions(&positions).unwrap();
            shares.push(drain(&mut source, 4, 1));
        }
        // Old progressions (2, 2) and (5, 2), each split in three of stride 6.
        assert_eq!(
            shares,
            vec![vec![2, 5, 8, 11], vec![4, 7, 10, 13], vec![6, 9, 12, 15]]
        );
    }

    #[test]
    fn an_unbounded_generator_rescales_without_duplicates() {
        let mut emitted = Vec::new();
        let mut positions = Vec::new();
        for j in 0..3 {
            let mut source = generator(None, j, 3);
            emitted.extend(drain(&mut source, 5 + j as usize, 2));
            positions.push(
                SourceFunction::<u64>::snapshot_position(&mut source)
                    .unwrap()
                    .unwrap(),
            );
        }
        let mut next = Vec::new();
        for j in 0..2 {
            let mut source = generator(None, j, 2);
            source.restore_rescaled_positions(&positions).unwrap();
            let part = drain(&mut source, 50, 1);
            next.push(*part.last().unwrap());
            emitted.extend(part);
        }
        let unique: std::collections::BTreeSet<u64> = emitted.iter().copied().collect();
        assert_eq!(unique.len(), emitted.len(), "no index twice");
        // Every index below the smaller of the two last ones was emitted.
        let below = *next.iter().min().unwrap();
        assert!((0..below).all(|g| unique.contains(&g)), "gap below {below}");
    }
}
