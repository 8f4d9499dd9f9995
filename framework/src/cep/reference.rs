//! A brute-force reference matcher: enumerates every assignment of events to stages and checks
//! the pattern's definition (see the `pattern` module) pair by pair, then applies the skip
//! strategy in emission order. Slow and obviously shaped like the definition; the automaton is
//! tested against it on random sequences.

use super::pattern::{AfterMatchSkipStrategy, Condition, Context, Contiguity, PartialView};
use super::pattern::{Pattern, StageKind};

/// A match as the reference sees it: `(positive stage index, event index)` in order.
pub(crate) type Assignment = Vec<(usize, usize)>;

struct RStage<T> {
    name: String,
    condition: Option<Condition<T>>,
    until: Option<Condition<T>>,
    min: u32,
    max: Option<u32>,
    optional: bool,
    greedy: bool,
    inner: Contiguity,
    outer: Contiguity,
}

struct RNeg<T> {
    after: usize,
    not_next: bool,
    condition: Option<Condition<T>>,
}

/// The events assigned so far, as iterative conditions see them.
struct Prefix<'a, T> {
    stages: &'a [RStage<T>],
    events: &'a [(i64, T)],
    assigned: &'a [(usize, usize)],
}

impl<T> PartialView<T> for Prefix<'_, T> {
    fn for_each(&self, name: &str, f: &mut dyn FnMut(&T)) {
        for &(stage, index) in self.assigned {
            if self.stages[stage].name == name {
                f(&self.events[index].1);
            }
        }
    }
}

struct Reference<'a, T> {
    stages: Vec<RStage<T>>,
    negs: Vec<RNeg<T>>,
    within: Option<i64>,
    events: &'a [(i64, T)],
}

impl<T> Reference<'_, T> {
    fn holds(&self, c: Option<&Condition<T>>, index: usize, prefix: &[(usize, usize)]) -> bool {
        let view = Prefix {
            stages: &self.stages,
            events: self.events,
            assigned: prefix,
        };
        c.is_none_or(|c| {
            c(
                &self.events[index].1,
                &Context::new(&view, self.events[index].0),
            )
        })
    }

    fn take(&self, s: usize, index: usize, prefix: &[(usize, usize)]) -> bool {
        self.holds(self.stages[s].condition.as_ref(), index, prefix)
            && !(self.stages[s].until.is_some()
                && self.holds(self.stages[s].until.as_ref(), index, prefix))
    }

    fn loop_ignores(&self, a: usize, g: usize, prefix: &[(usize, usize)]) -> bool {
        let until =
            self.stages[a].until.is_some() && self.holds(self.stages[a].until.as_ref(), g, prefix);
        !until
            && match self.stages[a].inner {
                Contiguity::Strict => false,
                Contiguity::Relaxed => !self.holds(self.stages[a].condition.as_ref(), g, prefix),
                Contiguity::NonDeterministic => true,
            }
    }

    fn stage_ignores(&self, w: usize, g: usize, prefix: &[(usize, usize)]) -> bool {
        match self.stages[w].outer {
            Contiguity::Strict => false,
            Contiguity::Relaxed => !self.holds(self.stages[w].condition.as_ref(), g, prefix),
            Contiguity::NonDeterministic => true,
        }
    }

    /// Whether the assignment satisfies the definition.
    fn valid(&self, assign: &[(usize, usize)]) -> bool {
        let mut counts = vec![0u32; self.stages.len()];
        for &(s, _) in assign {
            counts[s] += 1;
        }
        for (stage, &count) in self.stages.iter().zip(&counts) {
            if count == 0 {
                if !stage.optional {
                    return false;
                }
            } else if count < stage.min || stage.max.is_some_and(|m| count > m) {
                return false;
            }
        }
        if let (Some(within), Some(first), Some(last)) =
            (self.within, assign.first(), assign.last())
            && self.events[last.1].0 - self.events[first.1].0 >= within
        {
            return false;
        }
        for l in 0..assign.len() {
            let prefix = &assign[..l];
            let (s, index) = assign[l];
            if !self.take(s, index, prefix) {
                return false;
            }
            if l + 1 == assign.len() {
                break;
            }
            let (b, j) = assign[l + 1];
            let a = s;
            let i = index;
            let prefix = &assign[..=l];
            let c = prefix.iter().filter(|(st, _)| *st == a).count() as u32;
            if a == b {
                if !(i + 1..j).all(|g| self.loop_ignores(a, g, prefix)) {
                    return false;
                }
                continue;
            }
            for neg in self.negs.iter().filter(|n| n.after >= a && n.after < b) {
                let hit = if neg.not_next {
                    self.holds(neg.condition.as_ref(), i + 1, prefix)
                } else {
                    (i + 1..j).any(|g| self.holds(neg.condition.as_ref(), g, prefix))
                };
                if hit {
                    return false;
                }
            }
            let can_loop = self.stages[a].max.is_none_or(|m| c < m);
            let loop_alive =
                |t: usize| can_loop && (i + 1..t).all(|g| self.loop_ignores(a, g, prefix));
            let greedy_blocks =
                |t: usize| self.stages[a].greedy && loop_alive(t) && self.take(a, t, prefix);
            if greedy_blocks(j) {
                return false;
            }
            // Positions: the loop (if it can go on), then stages a+1..=b.
            let mut positions: Vec<Option<usize>> = Vec::new();
            if can_loop {
                positions.push(None);
            }
            positions.extend((a + 1..=b).map(Some));
            let gap: Vec<usize> = (i + 1..j).collect();
            if !self.split(&gap, 0, &positions, 0, a, prefix, &greedy_blocks) {
                return false;
            }
        }
        true
    }

    /// Whether `gap[k..]` can be absorbed by `positions[from..]` in order.
    #[allow(clippy::too_many_arguments)]
    fn split(
        &self,
        gap: &[usize],
        k: usize,
        positions: &[Option<usize>],
        from: usize,
        a: usize,
        prefix: &[(usize, usize)],
        greedy_blocks: &dyn Fn(usize) -> bool,
    ) -> bool {
        if k == gap.len() {
            return true;
        }
        (from..positions.len()).any(|p| {
            let g = gap[k];
            let ok = match positions[p] {
                None => self.loop_ignores(a, g, prefix),
                Some(w) => self.stage_ignores(w, g, prefix) && !greedy_blocks(g),
            };
            ok && self.split(gap, k + 1, positions, p, a, prefix, greedy_blocks)
        })
    }

    fn enumerate(&self, current: &mut Assignment, out: &mut Vec<Assignment>) {
        if !current.is_empty() && self.valid(current) {
            out.push(current.clone());
        }
        let (next_index, min_stage) = match current.last() {
            Some(&(s, i)) => (i + 1, s),
            None => (0, 0),
        };
        for i in next_index..self.events.len() {
            for s in min_stage..self.stages.len() {
                current.push((s, i));
                // Prune early: a prefix of a valid assignment must satisfy the pair rules
                // (checked by `valid` on the full prefix without the count rules).
                if self.prefix_ok(current) {
                    self.enumerate(current, out);
                }
                current.pop();
            }
        }
    }

    /// A cheap necessary condition for extending `assign`: its last event is taken.
    fn prefix_ok(&self, assign: &[(usize, usize)]) -> bool {
        let l = assign.len() - 1;
        let (s, i) = assign[l];
        let count = assign.iter().filter(|(st, _)| *st == s).count() as u32;
        self.stages[s].max.is_none_or(|m| count <= m)
            && self.stages[..s]
                .iter()
                .enumerate()
                .all(|(k, st)| st.optional || assign.iter().any(|(x, _)| *x == k))
            && self.take(s, i, &assign[..l])
    }
}

/// The matches of `pattern` over `events` (one key, in order), in emission order.
pub(crate) fn reference_matches<T>(pattern: &Pattern<T>, events: &[(i64, T)]) -> Vec<Assignment> {
    let mut stages = Vec::new();
    let mut negs = Vec::new();
    let mut final_neg: Option<Option<Condition<T>>> = None;
    for (i, stage) in pattern.stages.iter().enumerate() {
        if stage.kind == StageKind::NotFollowedBy && i + 1 == pattern.stages.len() {
            final_neg = Some(stage.condition.clone());
        } else if stage.kind == StageKind::Positive {
            stages.push(RStage {
                name: stage.name.clone(),
                condition: stage.condition.clone(),
                until: stage.until.clone(),
                min: stage.min,
                max: stage.max,
                optional: stage.optional,
                greedy: stage.greedy,
                inner: stage.inner,
                outer: stage.outer,
            });
        } else {
            negs.push(RNeg {
                after: stages.len() - 1,
                not_next: stage.kind == StageKind::NotNext,
                condition: stage.condition.clone(),
            });
        }
    }
    let reference = Reference {
        stages,
        negs,
        within: pattern.within_ms,
        events,
    };
    let mut all = Vec::new();
    reference.enumerate(&mut Vec::new(), &mut all);
    // When each match is reported: `(t, 1)` with its last event `t`; with a final negation,
    // `(t, 0)` before the first event `t` at or past `first + within` (`events.len()` at the
    // end), and only if no event from its last one up to there satisfies the negation.
    let mut at: Vec<(usize, u8)> = Vec::with_capacity(all.len());
    let mut keep = vec![true; all.len()];
    for (k, m) in all.iter().enumerate() {
        match (&final_neg, pattern.within_ms) {
            (Some(neg), Some(within)) => {
                let first_ts = events[m[0].1].0;
                let last = m.last().map_or(0, |x| x.1);
                let bound = (last + 1..events.len())
                    .find(|&g| events[g].0 - first_ts >= within)
                    .unwrap_or(events.len());
                keep[k] = !(last + 1..bound).any(|g| reference.holds(neg.as_ref(), g, m));
                at.push((bound, 0));
            }
            _ => at.push((m.last().map_or(0, |x| x.1), 1)),
        }
    }
    // Emission: in that order; among equals, earliest start, then by events; each emitted
    // match prunes per the skip strategy.
    let mut excluded: Vec<bool> = keep.iter().map(|k| !k).collect();
    let mut emitted = Vec::new();
    let times = (0..=events.len()).flat_map(|t| [(t, 0u8), (t, 1u8)]);
    for time in times {
        let mut due: Vec<usize> = (0..all.len())
            .filter(|&k| !excluded[k] && at[k] == time)
            .collect();
        due.sort_by(|&x, &y| {
            let ix: Vec<usize> = all[x].iter().map(|p| p.1).collect();
            let iy: Vec<usize> = all[y].iter().map(|p| p.1).collect();
            ix[0].cmp(&iy[0]).then(ix.cmp(&iy))
        });
        for k in due {
            if excluded[k] {
                continue;
            }
            let m = all[k].clone();
            excluded[k] = true;
            let named = |name: &str| {
                m.iter()
                    .filter(|(s, _)| reference.stages[*s].name == name)
                    .map(|(_, i)| *i)
                    .collect::<Vec<_>>()
            };
            let bound = match &pattern.skip {
                AfterMatchSkipStrategy::NoSkip => None,
                AfterMatchSkipStrategy::SkipToNext => Some((m[0].1, true)),
                AfterMatchSkipStrategy::SkipPastLastEvent => m.last().map(|x| (x.1, true)),
                AfterMatchSkipStrategy::SkipToFirst(name) => {
                    named(name).first().map(|&i| (i, false))
                }
                AfterMatchSkipStrategy::SkipToLast(name) => named(name).last().map(|&i| (i, false)),
            };
            if let Some((bound, inclusive)) = bound {
                for (q, other) in all.iter().enumerate() {
                    // Skipping concerns matches that start before the bound, whether or not
                    // they would be reported.
                    let start = other[0].1;
                    if start < bound || (inclusive && start == bound) {
                        excluded[q] = true;
                    }
                }
            }
            emitted.push(m);
        }
    }
    emitted
}
