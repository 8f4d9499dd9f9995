//! A brute-force reference matcher: enumerates every assignment of events to stages and checks
//! the pattern's definition (see the `pattern` module) pair by pair, then applies the skip
//! strategy in emission order. Slow and obviously shaped like the definition; the automaton is
//! tested against it on random sequences.
//!
//! Groups are handled by *expansion*, independently of the automaton's graph: a pattern with
//! groups stands for every straight chain obtained by writing each group out as many times
//! as it repeats (`lo..=hi`, any number for a loop, none if optional). A repetition that could
//! follow but does not is written as a *skip* stage: its first stage, taking no event, whose
//! contiguity absorbs the events skipped while waiting for it (Flink's proceed edge leaves a
//! group from its first state). The second and later repetitions enter their first stage with
//! the group's inner contiguity. Each chain is then matched as a pattern without groups, and
//! the matches of all chains are merged (each chain gives its own matches: the stages of
//! different repetitions are different stages of the chain).

use super::pattern::{AfterMatchSkipStrategy, Condition, Context, Contiguity, PartialView};
use super::pattern::{Item, Pattern, StageKind};

/// A match as the reference sees it: `(positive stage index as written, event index)` in
/// order (repetitions of a group share their stages' indices).
pub(crate) type Assignment = Vec<(usize, usize)>;

struct RStage<T> {
    name: String,
    /// The index of the stage among the pattern's positive stages as written.
    label: usize,
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

/// One element of a chain: a stage (in one repetition of its groups) or a negation.
#[derive(Debug, Clone, Copy)]
enum Elem {
    Stage {
        index: usize,
        outer: Contiguity,
        skip_only: bool,
    },
    Negation(usize),
}

/// A chain and the fewest events it needs.
type Chain = (Vec<Elem>, usize);

/// The chains `items` stand for that need at most `budget` events.
fn chains<T: 'static>(
    pattern: &Pattern<T>,
    items: &[Item],
    head: Option<Contiguity>,
    budget: usize,
) -> Vec<Chain> {
    let mut all: Vec<Chain> = vec![(Vec::new(), 0)];
    for (i, item) in items.iter().enumerate() {
        let head = if i == 0 { head } else { None };
        let options = item_chains(pattern, item, head, budget);
        let mut next = Vec::new();
        for (prefix, need) in &all {
            for (elems, more) in &options {
                if need + more <= budget {
                    let mut chain = prefix.clone();
                    chain.extend_from_slice(elems);
                    next.push((chain, need + more));
                }
            }
        }
        all = next;
    }
    all
}

fn item_chains<T: 'static>(
    pattern: &Pattern<T>,
    item: &Item,
    head: Option<Contiguity>,
    budget: usize,
) -> Vec<Chain> {
    match item {
        Item::Stage(i) => {
            let stage = &pattern.stages[*i];
            if stage.kind != StageKind::Positive {
                return vec![(vec![Elem::Negation(*i)], 0)];
            }
            let need = if stage.optional {
                0
            } else {
                stage.min as usize
            };
            let elem = Elem::Stage {
                index: *i,
                outer: head.unwrap_or(stage.outer),
                skip_only: false,
            };
            vec![(vec![elem], need)]
        }
        Item::Group(k, inner) => {
            let group = &pattern.groups[*k];
            let first = group.range.start;
            let skip = |head: Option<Contiguity>| Elem::Stage {
                index: first,
                outer: head.unwrap_or(pattern.stages[first].outer),
                skip_only: true,
            };
            let first_copy = chains(pattern, inner, head, budget);
            let later_copy = chains(pattern, inner, Some(group.inner), budget);
            let mut out = Vec::new();
            if group.optional {
                out.push((vec![skip(head)], 0));
            }
            // Depth-first over the number of repetitions.
            let mut stack: Vec<(Vec<Elem>, usize, u32)> = vec![(Vec::new(), 0, 0)];
            while let Some((chain, need, copies)) = stack.pop() {
                if copies >= group.min {
                    let mut done = chain.clone();
                    if group.max != Some(copies) {
                        done.push(skip(Some(group.inner)));
                    }
                    out.push((done, need));
                }
                if group.max.is_some_and(|max| copies >= max) {
                    continue;
                }
                let copy = if copies == 0 {
                    &first_copy
                } else {
                    &later_copy
                };
                for (elems, more) in copy {
                    // `validate` makes a repeated group need an event, so the loop ends.
                    if need + more > budget || (group.max.is_none() && *more == 0) {
                        continue;
                    }
                    let mut longer = chain.clone();
                    longer.extend_from_slice(elems);
                    stack.push((longer, need + more, copies + 1));
                }
            }
            out
        }
    }
}

/// The matches of `pattern` over `events` (one key, in order), in emission order.
pub(crate) fn reference_matches<T: 'static>(
    pattern: &Pattern<T>,
    events: &[(i64, T)],
) -> Vec<Assignment> {
    let mut labels = vec![usize::MAX; pattern.stages.len()];
    let mut names: Vec<String> = Vec::new();
    for (i, stage) in pattern.stages.iter().enumerate() {
        if stage.kind == StageKind::Positive {
            labels[i] = names.len();
            names.push(stage.name.clone());
        }
    }
    let final_negation = pattern
        .stages
        .last()
        .filter(|s| s.kind == StageKind::NotFollowedBy)
        .map(|s| s.condition.clone());
    // Every match with when it is reported: `(t, 1)` with its last event `t`; with a final
    // negation, `(t, 0)` before the first event `t` at or past `first + within`
    // (`events.len()` at the end), and only if no event from its last one up to there
    // satisfies the negation.
    let mut all: Vec<Assignment> = Vec::new();
    let mut at: Vec<(usize, u8)> = Vec::new();
    let mut keep: Vec<bool> = Vec::new();
    for (mut chain, _) in chains(pattern, &pattern.items(), None, events.len()) {
        if final_negation.is_some() {
            // The last element is the final negation of the last repetition.
            chain.pop();
        }
        let mut stages = Vec::new();
        let mut negs = Vec::new();
        for elem in chain {
            match elem {
                Elem::Stage {
                    index,
                    outer,
                    skip_only,
                } => {
                    let stage = &pattern.stages[index];
                    stages.push(RStage {
                        name: stage.name.clone(),
                        label: labels[index],
                        condition: stage.condition.clone(),
                        until: stage.until.clone(),
                        min: if skip_only { 1 } else { stage.min },
                        max: if skip_only { Some(0) } else { stage.max },
                        optional: skip_only || stage.optional,
                        greedy: stage.greedy,
                        inner: stage.inner,
                        outer,
                    });
                }
                Elem::Negation(index) => {
                    let stage = &pattern.stages[index];
                    negs.push(RNeg {
                        after: stages.len() - 1,
                        not_next: stage.kind == StageKind::NotNext,
                        condition: stage.condition.clone(),
                    });
                }
            }
        }
        let reference = Reference {
            stages,
            negs,
            within: pattern.within_ms,
            events,
        };
        let mut found = Vec::new();
        reference.enumerate(&mut Vec::new(), &mut found);
        for m in found {
            match (&final_negation, pattern.within_ms) {
                (Some(neg), Some(within)) => {
                    let first_ts = events[m[0].1].0;
                    let last = m.last().map_or(0, |x| x.1);
                    let bound = (last + 1..events.len())
                        .find(|&g| events[g].0 - first_ts >= within)
                        .unwrap_or(events.len());
                    keep.push(!(last + 1..bound).any(|g| reference.holds(neg.as_ref(), g, &m)));
                    at.push((bound, 0));
                }
                _ => {
                    keep.push(true);
                    at.push((m.last().map_or(0, |x| x.1), 1));
                }
            }
            all.push(
                m.iter()
                    .map(|&(s, i)| (reference.stages[s].label, i))
                    .collect(),
            );
        }
    }
    // Emission: in that order; among equals, earliest start, then by events, then by
    // stages; each emitted match prunes per the skip strategy.
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
            let lx: Vec<usize> = all[x].iter().map(|p| p.0).collect();
            let ly: Vec<usize> = all[y].iter().map(|p| p.0).collect();
            ix[0].cmp(&iy[0]).then(ix.cmp(&iy)).then(lx.cmp(&ly))
        });
        for k in due {
            if excluded[k] {
                continue;
            }
            let m = all[k].clone();
            excluded[k] = true;
            let named = |name: &str| {
                m.iter()
                    .filter(|(s, _)| names[*s] == name)
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
