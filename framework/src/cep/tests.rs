//! The automaton against the brute-force reference on random patterns and event sequences.

use proptest::prelude::*;

use super::nfa::{Limit, NfaOutput, NfaState};
use super::pattern::{AfterMatchSkipStrategy, Pattern};
use super::reference::{Assignment, reference_matches};
use super::{CompiledPattern, OverflowPolicy};

/// An event: its index in the sequence and a small value conditions test.
type Ev = (usize, u8);

#[derive(Debug, Clone)]
enum Cond {
    Any,
    Eq(u8),
    Le(u8),
    Ge(u8),
    /// At least the last event of the named stage so far (true when there is none).
    GeLast(usize),
    /// The sum of the stage's own events so far plus this one stays at most `k`.
    SumLe(u8),
}

#[derive(Debug, Clone, Copy)]
enum Quant {
    One,
    Times(u32),
    Range(u32, u32),
    OneOrMore,
    TimesOrMore(u32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    Next,
    FollowedBy,
    FollowedByAny,
}

#[derive(Debug, Clone)]
struct StageSpec {
    cond: Cond,
    quant: Quant,
    optional: bool,
    greedy: bool,
    inner: u8,
    until: Option<u8>,
    link: Link,
    /// A negation before this stage: `(not_next, value it forbids)`.
    negation: Option<(bool, u8)>,
}

/// A group around stages `start..start + len` with a quantifier.
#[derive(Debug, Clone)]
struct GroupSpec {
    start: usize,
    len: usize,
    quant: Quant,
    optional: bool,
    inner: u8,
    /// A group nested at the start of this one, around its first `len` stages.
    nested: Option<Box<Self>>,
}

#[derive(Debug, Clone)]
struct Spec {
    stages: Vec<StageSpec>,
    group: Option<GroupSpec>,
    within: Option<i64>,
    skip: u8,
    skip_stage: usize,
    /// A `not_followed_by` ending the pattern (kept only with `within`): the value it forbids.
    trailing: Option<u8>,
}

fn cond_strategy() -> impl Strategy<Value = Cond> {
    prop_oneof![
        2 => Just(Cond::Any),
        4 => (0u8..3).prop_map(Cond::Eq),
        2 => (0u8..3).prop_map(Cond::Le),
        2 => (0u8..3).prop_map(Cond::Ge),
        1 => (0usize..3).prop_map(Cond::GeLast),
        1 => (1u8..5).prop_map(Cond::SumLe),
    ]
}

fn quant_strategy() -> impl Strategy<Value = Quant> {
    prop_oneof![
        4 => Just(Quant::One),
        1 => (2u32..=3).prop_map(Quant::Times),
        1 => Just(Quant::Range(1, 2)),
        1 => Just(Quant::Range(0, 2)),
        2 => Just(Quant::OneOrMore),
        1 => Just(Quant::TimesOrMore(2)),
    ]
}

fn stage_strategy() -> impl Strategy<Value = StageSpec> {
    (
        cond_strategy(),
        quant_strategy(),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.3),
        0u8..3,
        prop::option::weighted(0.25, 0u8..3),
        prop_oneof![
            Just(Link::Next),
            Just(Link::FollowedBy),
            Just(Link::FollowedByAny)
        ],
        prop::option::weighted(0.25, (any::<bool>(), 0u8..3)),
    )
        .prop_map(
            |(cond, quant, optional, greedy, inner, until, link, negation)| StageSpec {
                cond,
                quant,
                optional,
                greedy,
                inner,
                until,
                link,
                negation,
            },
        )
}

fn group_strategy() -> impl Strategy<Value = GroupSpec> {
    (
        0usize..3,
        1usize..=2,
        prop_oneof![
            1 => Just(Quant::One),
            1 => Just(Quant::Times(2)),
            2 => Just(Quant::Range(1, 2)),
            1 => Just(Quant::Range(0, 2)),
            3 => Just(Quant::OneOrMore),
            1 => Just(Quant::TimesOrMore(2)),
        ],
        prop::bool::weighted(0.3),
        0u8..3,
    )
        .prop_map(|(start, len, quant, optional, inner)| GroupSpec {
            start,
            len,
            quant,
            optional,
            inner,
            nested: None,
        })
}

/// A group, sometimes with another group nested at its start.
fn nested_group_strategy() -> impl Strategy<Value = GroupSpec> {
    (
        group_strategy(),
        prop::option::weighted(0.3, group_strategy()),
    )
        .prop_map(|(mut outer, nested)| {
            outer.nested = nested.map(|mut n| {
                n.len = n.len.min(outer.len);
                Box::new(n)
            });
            outer
        })
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(stage_strategy(), 1..=3),
        prop::option::weighted(0.5, nested_group_strategy()),
        prop::option::weighted(0.4, 1i64..6),
        0u8..5,
        0usize..3,
        prop::option::weighted(0.3, 0u8..3),
    )
        .prop_map(|(stages, group, within, skip, skip_stage, trailing)| Spec {
            stages,
            group,
            within,
            skip,
            skip_stage,
            trailing: trailing.filter(|_| within.is_some()),
        })
}

fn events_strategy() -> impl Strategy<Value = Vec<(i64, Ev)>> {
    prop::collection::vec((0i64..=2, 0u8..3), 0..=8).prop_map(|steps| {
        let mut ts = 0;
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (dt, v))| {
                ts += dt;
                (ts, (i, v))
            })
            .collect()
    })
}

fn name(i: usize) -> String {
    format!("s{i}")
}

fn add_cond(p: Pattern<Ev>, cond: &Cond, own: usize) -> Pattern<Ev> {
    match cond.clone() {
        Cond::Any => p,
        Cond::Eq(x) => p.where_(move |e: &Ev| e.1 == x),
        Cond::Le(x) => p.where_(move |e: &Ev| e.1 <= x),
        Cond::Ge(x) => p.where_(move |e: &Ev| e.1 >= x),
        Cond::GeLast(stage) => {
            let stage = name(stage.min(own));
            p.where_iterative(move |e: &Ev, ctx| {
                ctx.fold(&stage, None, |_, x: &Ev| Some(x.1))
                    .is_none_or(|last| e.1 >= last)
            })
        }
        Cond::SumLe(k) => {
            let own = name(own);
            p.where_iterative(move |e: &Ev, ctx| {
                ctx.fold(&own, u32::from(e.1), |s, x: &Ev| s + u32::from(x.1)) <= u32::from(k)
            })
        }
    }
}

/// Adds stage `i` to `pattern` (or begins one with it).
fn add_stage(pattern: Option<Pattern<Ev>>, i: usize, stage: &StageSpec) -> Pattern<Ev> {
    let mut p = match pattern {
        None => Pattern::begin(&name(i)),
        Some(p) => {
            let p = match stage.negation {
                Some((true, v)) => p.not_next(&format!("n{i}")).where_(move |e: &Ev| e.1 == v),
                Some((false, v)) => p
                    .not_followed_by(&format!("n{i}"))
                    .where_(move |e: &Ev| e.1 == v),
                None => p,
            };
            link(p, stage.link, &name(i))
        }
    };
    p = add_cond(p, &stage.cond, i);
    let loops = match stage.quant {
        Quant::One => false,
        Quant::Times(n) => {
            p = p.times(n);
            true
        }
        Quant::Range(lo, hi) => {
            p = p.times_range(lo, hi);
            true
        }
        Quant::OneOrMore => {
            p = p.one_or_more();
            true
        }
        Quant::TimesOrMore(n) => {
            p = p.times_or_more(n);
            true
        }
    };
    let unbounded = matches!(stage.quant, Quant::OneOrMore | Quant::TimesOrMore(_));
    if loops {
        p = match stage.inner {
            1 => p.consecutive(),
            2 => p.allow_combinations(),
            _ => p,
        };
        // greedy() needs a choice of how many events (a range or a loop).
        if stage.greedy && !matches!(stage.quant, Quant::Times(_)) {
            p = p.greedy();
        }
    }
    if unbounded && let Some(v) = stage.until {
        p = p.until(move |e: &Ev| e.1 == v);
    }
    if stage.optional {
        p = p.optional();
    }
    p
}

fn link(p: Pattern<Ev>, link: Link, name: &str) -> Pattern<Ev> {
    match link {
        Link::Next => p.next(name),
        Link::FollowedBy => p.followed_by(name),
        Link::FollowedByAny => p.followed_by_any(name),
    }
}

/// Applies a quantifier to the group just added.
fn quantify_group(p: Pattern<Ev>, group: &GroupSpec) -> Pattern<Ev> {
    let mut p = match group.quant {
        Quant::One => p,
        Quant::Times(n) => p.times(n),
        Quant::Range(lo, hi) => p.times_range(lo, hi),
        Quant::OneOrMore => p.one_or_more(),
        Quant::TimesOrMore(n) => p.times_or_more(n),
    };
    if !matches!(group.quant, Quant::One) {
        p = match group.inner {
            1 => p.consecutive(),
            2 => p.allow_combinations(),
            _ => p,
        };
    }
    if group.optional {
        p = p.optional();
    }
    p
}

/// Builds the pattern; specs that the builder would reject are made valid first.
fn build(spec: &Spec) -> Pattern<Ev> {
    let mut stages = spec.stages.clone();
    let group = spec.group.as_ref().map(|g| {
        let start = g.start.min(stages.len() - 1);
        let end = (start + g.len).min(stages.len());
        (start..end, g)
    });
    if let Some((range, g)) = &group {
        // A repetition must take an event; negations only in groups repeated times(n).
        stages[range.start].optional = false;
        if let Quant::Range(0, hi) = stages[range.start].quant {
            stages[range.start].quant = Quant::Range(1, hi);
        }
        let exact = |g: &GroupSpec| matches!(g.quant, Quant::One | Quant::Times(_)) && !g.optional;
        let exact = exact(g) && g.nested.as_deref().is_none_or(exact);
        for stage in &mut stages[range.start + 1..range.end] {
            if !exact {
                stage.negation = None;
            }
        }
    }
    let mut pattern: Option<Pattern<Ev>> = None;
    let mut i = 0;
    while i < stages.len() {
        match &group {
            Some((range, g)) if range.start == i => {
                let mut inner: Option<Pattern<Ev>> = None;
                let mut k = range.start;
                if let Some(nested) = &g.nested {
                    let end = (range.start + nested.len).min(range.end);
                    let mut group: Option<Pattern<Ev>> = None;
                    for (k, stage) in stages.iter().enumerate().take(end).skip(range.start) {
                        group = Some(add_stage(group, k, stage));
                    }
                    let Some(group) = group else {
                        unreachable!("groups have a stage")
                    };
                    let mut nested = (**nested).clone();
                    let optional =
                        |s: &StageSpec| s.optional || matches!(s.quant, Quant::Range(0, _));
                    if end == range.end || optional(&stages[end]) {
                        // The outer group must take an event per repetition.
                        nested.optional = false;
                        if let Quant::Range(0, hi) = nested.quant {
                            nested.quant = Quant::Range(1, hi);
                        }
                    }
                    inner = Some(quantify_group(Pattern::begin_group(group), &nested));
                    k = end;
                }
                for (k, stage) in stages.iter().enumerate().take(range.end).skip(k) {
                    inner = Some(add_stage(inner, k, stage));
                }
                let Some(inner) = inner else {
                    unreachable!("groups have a stage")
                };
                let outer = match pattern.take() {
                    None => Pattern::begin_group(inner),
                    Some(p) => {
                        let p = match stages[i].negation {
                            Some((true, v)) => {
                                p.not_next(&format!("n{i}")).where_(move |e: &Ev| e.1 == v)
                            }
                            Some((false, v)) => p
                                .not_followed_by(&format!("n{i}"))
                                .where_(move |e: &Ev| e.1 == v),
                            None => p,
                        };
                        match stages[i].link {
                            Link::Next => p.next_group(inner),
                            Link::FollowedBy => p.followed_by_group(inner),
                            Link::FollowedByAny => p.followed_by_any_group(inner),
                        }
                    }
                };
                pattern = Some(quantify_group(outer, g));
                i = range.end;
            }
            _ => {
                pattern = Some(add_stage(pattern.take(), i, &stages[i]));
                i += 1;
            }
        }
    }
    let Some(mut pattern) = pattern else {
        unreachable!("specs have a stage")
    };
    if let Some(v) = spec.trailing {
        pattern = pattern
            .not_followed_by("end")
            .where_(move |e: &Ev| e.1 == v);
    }
    if let Some(within) = spec.within {
        pattern = pattern.within(within);
    }
    let target = name(spec.skip_stage.min(spec.stages.len() - 1));
    pattern.with_skip_strategy(match spec.skip {
        0 => AfterMatchSkipStrategy::NoSkip,
        1 => AfterMatchSkipStrategy::SkipToNext,
        2 => AfterMatchSkipStrategy::SkipPastLastEvent,
        3 => AfterMatchSkipStrategy::SkipToFirst(target),
        _ => AfterMatchSkipStrategy::SkipToLast(target),
    })
}

/// Runs the automaton; returns the matches as assignments, in emission order.
fn run(compiled: &CompiledPattern<Ev>, events: &[(i64, Ev)]) -> Vec<Assignment> {
    let mut state = NfaState::default();
    let limit = Limit {
        max_partials: usize::MAX,
        policy: OverflowPolicy::Fail,
    };
    let mut found = Vec::new();
    for (seq, (ts, event)) in events.iter().enumerate() {
        let mut out = NfaOutput::new(false);
        compiled
            .process(&mut state, *event, seq as u64, *ts, limit, &mut out)
            .expect("no limit");
        state.check();
        for m in out.matches {
            found.push(m.events().iter().map(|e| (e.position, e.event.0)).collect());
        }
    }
    // The end of input: every time bound passes.
    let mut out = NfaOutput::new(false);
    compiled.advance_time(&mut state, i64::MAX, &mut out);
    state.check();
    for m in out.matches {
        found.push(m.events().iter().map(|e| (e.position, e.event.0)).collect());
    }
    found
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn automaton_agrees_with_the_reference(spec in spec_strategy(), events in events_strategy()) {
        let pattern = build(&spec);
        let compiled = match pattern.compile() {
            Ok(compiled) => compiled,
            Err(error) => {
                // Only all-optional patterns are rejected among generated specs.
                prop_assert!(error.to_string().contains("only optional stages"), "{}", error);
                prop_assume!(false);
                unreachable!()
            }
        };
        let expected = reference_matches(&pattern, &events);
        let actual = run(&compiled, &events);
        prop_assert_eq!(actual, expected, "pattern {:?}", spec);
    }
}

/// Runs `pattern` on values with timestamps 0, 1, 2, ...
fn matches_of(pattern: Pattern<Ev>, values: &[u8]) -> Vec<Vec<usize>> {
    let events: Vec<(i64, Ev)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as i64, (i, v)))
        .collect();
    let compiled = pattern.compile().expect("valid pattern");
    let found = run(&compiled, &events);
    assert_eq!(found, reference_matches(&pattern, &events), "reference");
    found
        .into_iter()
        .map(|m| m.into_iter().map(|(_, i)| i).collect())
        .collect()
}

fn is(v: u8) -> impl Fn(&Ev) -> bool + Send + Sync + 'static {
    move |e: &Ev| e.1 == v
}

#[test]
fn flink_documentation_examples() {
    // Flink's `consecutive()` example: C D A1 A2 A3 D A4 B (C=2, D=3, A=0, B=1).
    let input = [2, 3, 0, 0, 0, 3, 0, 1];
    let pattern = |consecutive: bool| {
        let p = Pattern::begin("start")
            .where_(is(2))
            .followed_by("middle")
            .where_(is(0))
            .one_or_more();
        let p = if consecutive { p.consecutive() } else { p };
        p.followed_by("end").where_(is(1))
    };
    assert_eq!(
        matches_of(pattern(true), &input),
        vec![vec![0, 2, 3, 4, 7], vec![0, 2, 3, 7], vec![0, 2, 7]]
    );
    assert_eq!(
        matches_of(pattern(false), &input),
        vec![
            vec![0, 2, 3, 4, 6, 7],
            vec![0, 2, 3, 4, 7],
            vec![0, 2, 3, 7],
            vec![0, 2, 7]
        ]
    );
    // "a b+ c" with followed_by_any and allow_combinations over a b1 d b2 d b3 c: the first b
    // is any of the three and the loop any subset after it: 7 matches.
    let any = Pattern::begin("a")
        .where_(is(0))
        .followed_by_any("b")
        .where_(is(1))
        .one_or_more()
        .allow_combinations()
        .followed_by("c")
        .where_(is(2));
    assert_eq!(matches_of(any, &[0, 1, 3, 1, 3, 1, 2]).len(), 7);
    // Greedy: the loop takes every a before b may start.
    let loop_then_b = |greedy: bool| {
        let p = Pattern::begin("a").where_(is(0)).one_or_more();
        let p = if greedy { p.greedy() } else { p };
        p.followed_by("b").where_(|e: &Ev| e.1 <= 2)
    };
    assert_eq!(
        matches_of(loop_then_b(false), &[0, 0, 2]),
        vec![vec![0, 1], vec![0, 1, 2], vec![1, 2]]
    );
    assert_eq!(
        matches_of(loop_then_b(true), &[0, 0, 2]),
        vec![vec![0, 1, 2], vec![1, 2]]
    );
}

#[test]
fn three_failures_give_two_matches_without_skip_and_one_when_skipping_past() {
    let fail = |p: Pattern<Ev>| p.where_(is(1));
    let pattern = fail(fail(Pattern::begin("first")).next("second"));
    assert_eq!(
        matches_of(pattern.clone(), &[1, 1, 1]),
        vec![vec![0, 1], vec![1, 2]]
    );
    let skip = pattern.with_skip_strategy(AfterMatchSkipStrategy::SkipPastLastEvent);
    assert_eq!(matches_of(skip, &[1, 1, 1]), vec![vec![0, 1]]);
}

#[test]
fn within_is_exclusive_and_times_out_partial_matches() {
    let pattern = Pattern::begin("a")
        .where_(is(1))
        .followed_by("b")
        .where_(is(2))
        .within(2);
    let compiled = pattern.compile().expect("valid");
    let mut state = NfaState::default();
    let limit = Limit {
        max_partials: 10,
        policy: OverflowPolicy::Fail,
    };
    let mut out = NfaOutput::new(true);
    compiled
        .process(&mut state, (0, 1), 0, 0, limit, &mut out)
        .expect("ok");
    compiled
        .process(&mut state, (1, 2), 1, 2, limit, &mut out)
        .expect("ok");
    assert!(out.matches.is_empty(), "2 - 0 is not below 2");
    assert_eq!(out.timeouts.len(), 1);
    assert_eq!(out.timeouts[0].1, 2, "timed out at start + within");
    assert_eq!(out.timeouts[0].0.get("a"), vec![&(0, 1)]);
    assert!(state.is_empty());
    assert_eq!(
        state.buffer.sizes(),
        (0, 0),
        "the buffer is cleaned with the partial match"
    );
}

#[test]
fn partial_match_limit_drops_the_oldest_or_fails() {
    let pattern = Pattern::begin("a")
        .where_(is(1))
        .followed_by("b")
        .where_(is(2));
    let compiled = pattern.compile().expect("valid");
    let mut state = NfaState::default();
    let drop = Limit {
        max_partials: 3,
        policy: OverflowPolicy::DropOldest,
    };
    let mut out = NfaOutput::new(false);
    for seq in 0..10u64 {
        compiled
            .process(
                &mut state,
                (seq as usize, 1),
                seq,
                seq as i64,
                drop,
                &mut out,
            )
            .expect("drops");
        state.check();
        assert!(state.partial_count() <= 3);
    }
    assert_eq!(out.dropped, 7);
    compiled
        .process(&mut state, (10, 2), 10, 10, drop, &mut out)
        .expect("match");
    let firsts: Vec<usize> = out
        .matches
        .iter()
        .map(|m| m.first("a").expect("a").0)
        .collect();
    assert_eq!(firsts, vec![7, 8, 9], "the newest partial matches survived");
    let fail = Limit {
        max_partials: 3,
        policy: OverflowPolicy::Fail,
    };
    let mut state = NfaState::default();
    let result =
        (0..4u64).try_for_each(|seq| compiled.process(&mut state, (0, 1), seq, 0, fail, &mut out));
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("more than 3 partial matches")
    );
}

#[test]
fn events_are_stored_once_however_many_partial_matches_share_them() {
    // followed_by_any: every pair (a_i, b_j) is a partial match sharing the a events.
    let pattern = Pattern::begin("a")
        .where_(is(1))
        .followed_by_any("b")
        .where_(is(1))
        .followed_by("c")
        .where_(is(2));
    let compiled = pattern.compile().expect("valid");
    let mut state = NfaState::default();
    let limit = Limit {
        max_partials: 1000,
        policy: OverflowPolicy::Fail,
    };
    let mut out = NfaOutput::new(false);
    for seq in 0..6u64 {
        compiled
            .process(&mut state, (seq as usize, 1), seq, 0, limit, &mut out)
            .expect("ok");
    }
    state.check();
    // 6 single starts and 15 pairs, over 6 stored events.
    assert_eq!(state.partial_count(), 21);
    assert_eq!(state.buffer.sizes().0, 6);
}

#[test]
fn malformed_patterns_are_reported_with_the_stage() {
    let cases: Vec<(Pattern<Ev>, &str)> = vec![
        (
            Pattern::begin("a").not_next("x"),
            "negative stage 'x' cannot end",
        ),
        (
            Pattern::begin("a").not_next("x").within(5),
            "negative stage 'x' cannot end",
        ),
        (
            Pattern::begin("a").not_followed_by("x"),
            "'x' can end a pattern only with within()",
        ),
        (
            Pattern::begin("a").where_(is(1)).until(is(2)),
            "stage 'a': until() needs a looping stage",
        ),
        (
            Pattern::begin("a").greedy(),
            "stage 'a': greedy() needs a looping stage",
        ),
        (
            Pattern::begin("a").followed_by("a"),
            "stage name 'a' is used twice",
        ),
        (
            Pattern::begin("a").times(0),
            "stage 'a': times(0) is an empty range",
        ),
        (Pattern::begin("a").optional(), "only optional stages"),
        (Pattern::begin("a").within(0), "within(0)"),
        (
            Pattern::begin("a").with_skip_strategy(AfterMatchSkipStrategy::SkipToFirst("z".into())),
            "names stage 'z'",
        ),
    ];
    for (pattern, expected) in cases {
        let error = pattern.compile().expect_err(expected).to_string();
        assert!(
            error.contains(expected),
            "{error} should contain {expected}"
        );
    }
}

#[test]
fn groups_repeat_their_stages() {
    // (a b){2} with followed_by: a b a b.
    let group = Pattern::begin("a")
        .where_(is(1))
        .followed_by("b")
        .where_(is(2));
    let pattern = Pattern::begin("s")
        .where_(is(0))
        .followed_by_group(group)
        .times(2);
    let found = matches_of(pattern.clone(), &[0, 1, 2, 1, 2]);
    assert_eq!(found, vec![vec![0, 1, 2, 3, 4]]);
    let compiled = pattern.compile().expect("valid");
    let events: Vec<(i64, Ev)> = [0u8, 1, 2, 1, 2]
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as i64, (i, v)))
        .collect();
    let mut state = NfaState::default();
    let mut out = NfaOutput::new(false);
    for (seq, (ts, e)) in events.iter().enumerate() {
        compiled
            .process(
                &mut state,
                *e,
                seq as u64,
                *ts,
                Limit {
                    max_partials: 100,
                    policy: OverflowPolicy::Fail,
                },
                &mut out,
            )
            .expect("ok");
    }
    assert_eq!(
        out.matches[0].get("a").len(),
        2,
        "both repetitions under the group's stage name"
    );
    let optional_group = Pattern::<Ev>::begin("s")
        .where_(is(0))
        .followed_by_group(Pattern::begin("a").where_(is(1)))
        .optional()
        .followed_by("e")
        .where_(is(3));
    assert_eq!(
        matches_of(optional_group, &[0, 1, 3, 0, 3]),
        vec![vec![0, 1, 2], vec![0, 2], vec![3, 4]]
    );
}

/// `(a b)` as a group with the given links.
fn pair(inner_next: bool) -> Pattern<Ev> {
    let a = Pattern::begin("a").where_(is(1));
    let a = if inner_next {
        a.next("b")
    } else {
        a.followed_by("b")
    };
    a.where_(is(2))
}

#[test]
fn looping_groups_name_events_by_their_stages() {
    // Flink's `begin(begin("a").next("b")).oneOrMore()` then c: s a b a b c.
    let pattern = Pattern::begin("s")
        .where_(is(0))
        .followed_by_group(pair(true))
        .one_or_more()
        .followed_by("c")
        .where_(is(3));
    let found = matches_of(pattern.clone(), &[0, 1, 2, 1, 2, 3]);
    assert_eq!(found, vec![vec![0, 1, 2, 3, 4, 5], vec![0, 1, 2, 5]]);
    let compiled = pattern.compile().expect("valid");
    let events: Vec<(i64, Ev)> = [0u8, 1, 2, 1, 2, 3]
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as i64, (i, v)))
        .collect();
    let mut state = NfaState::default();
    let limit = Limit {
        max_partials: 100,
        policy: OverflowPolicy::Fail,
    };
    let mut out = NfaOutput::new(false);
    for (seq, (ts, e)) in events.iter().enumerate() {
        compiled
            .process(&mut state, *e, seq as u64, *ts, limit, &mut out)
            .expect("ok");
    }
    let m = &out.matches[0];
    assert_eq!(m.get("a"), vec![&(1, 1), &(3, 1)], "a -> [a1, a2]");
    assert_eq!(m.get("b"), vec![&(2, 2), &(4, 2)], "b -> [b1, b2]");
    assert_eq!(m.stage_names(), vec!["s", "a", "b", "c"]);
}

#[test]
fn contiguity_between_repetitions_is_the_groups_inner_one() {
    // s (a b)+ c with a stray 0 between repetitions: relaxed by default (the 0 is not an
    // `a`), strict with consecutive(), and allow_combinations() may also skip an `a`.
    let input = [0, 1, 2, 0, 1, 2, 1, 2, 3];
    let with = |inner: u8| {
        let p = Pattern::begin("s")
            .where_(is(0))
            .followed_by_group(pair(false))
            .times_or_more(2);
        let p = match inner {
            1 => p.consecutive(),
            2 => p.allow_combinations(),
            _ => p,
        };
        p.followed_by("c").where_(is(3))
    };
    let relaxed = matches_of(with(0), &input);
    assert!(relaxed.contains(&vec![0, 1, 2, 4, 5, 8]), "{relaxed:?}");
    assert!(
        !relaxed.contains(&vec![0, 1, 2, 6, 7, 8]),
        "relaxed cannot skip the a at 4"
    );
    let strict = matches_of(with(1), &input);
    assert_eq!(
        strict,
        vec![vec![3, 4, 5, 6, 7, 8]],
        "only the run without a gap"
    );
    let any = matches_of(with(2), &input);
    assert!(any.contains(&vec![0, 1, 2, 6, 7, 8]), "{any:?}");
}

#[test]
fn ranges_optional_and_nested_groups_agree_with_the_reference() {
    let values = [0, 1, 2, 1, 1, 2, 2, 3, 1, 2, 3];
    let range = Pattern::begin("s")
        .where_(is(0))
        .followed_by_group(pair(false))
        .times_range(1, 2)
        .followed_by("c")
        .where_(is(3));
    assert!(!matches_of(range, &values).is_empty());
    let optional_loop = Pattern::begin("s")
        .where_(is(0))
        .next_group(pair(true))
        .one_or_more()
        .optional()
        .followed_by("c")
        .where_(is(3))
        .with_skip_strategy(AfterMatchSkipStrategy::SkipToLast("a".into()));
    assert!(!matches_of(optional_loop, &values).is_empty());
    // ((a b){1,2} c)+ with a loop on `a` inside.
    let inner = Pattern::begin("a")
        .where_(is(1))
        .one_or_more()
        .followed_by("b")
        .where_(is(2));
    let nested = Pattern::begin_group(
        Pattern::begin_group(inner)
            .times_range(1, 2)
            .followed_by("c")
            .where_(is(3)),
    )
    .one_or_more()
    .within(10);
    let found = matches_of(nested, &values);
    assert!(found.contains(&vec![1, 2, 3, 5, 7, 8, 9, 10]), "{found:?}");
}

#[test]
fn group_quantifier_errors_name_the_group() {
    let group = || Pattern::<Ev>::begin("a").followed_by("b");
    let cases: Vec<(Pattern<Ev>, &str)> = vec![
        (
            Pattern::begin("s")
                .followed_by_group(group())
                .one_or_more()
                .greedy(),
            "group starting at stage 'a': greedy() does not apply to a group",
        ),
        (
            Pattern::begin("s")
                .followed_by_group(group())
                .one_or_more()
                .until(is(1)),
            "group starting at stage 'a': until() on a group is not supported",
        ),
        (
            Pattern::begin("s").followed_by_group(group()).where_(is(1)),
            "group starting at stage 'a': a group takes no condition",
        ),
        (
            Pattern::begin("s")
                .followed_by_group(group())
                .times(2)
                .one_or_more(),
            "group starting at stage 'a' already has a quantifier; one_or_more() cannot be added",
        ),
        (
            Pattern::begin("s")
                .followed_by_group(group())
                .times_range(3, 2),
            "group starting at stage 'a': times_range(3, 2) is an empty range",
        ),
        (
            Pattern::begin("s").followed_by_group(group()).consecutive(),
            "group starting at stage 'a': consecutive() and allow_combinations() need a quantifier",
        ),
        (
            Pattern::begin("s")
                .followed_by_group(Pattern::begin("a").optional().followed_by("b").optional())
                .one_or_more(),
            "group starting at stage 'a': every stage in it is optional",
        ),
        (
            Pattern::begin("s")
                .followed_by_group(Pattern::begin("a").not_next("n").followed_by("b"))
                .times_range(1, 3),
            "negative stage 'n' is inside a group that repeats a varying number of times",
        ),
        (
            Pattern::begin("s").followed_by_group(group()).times(40),
            "more than 63 stages once its groups are expanded",
        ),
        (
            Pattern::begin_group(group()).optional(),
            "only optional stages",
        ),
    ];
    for (pattern, expected) in cases {
        let error = pattern.compile().expect_err(expected).to_string();
        assert!(
            error.contains(expected),
            "{error} should contain {expected}"
        );
    }
    // Negations in a group repeated an exact number of times are fine.
    let exact = Pattern::<Ev>::begin("s")
        .followed_by_group(Pattern::begin("a").not_next("n").followed_by("b"))
        .times(2);
    assert!(exact.compile().is_ok());
}

#[test]
fn a_final_not_followed_by_reports_matches_when_their_bound_passes() {
    // a, not followed by b within 3 (timestamps 0, 1, 2, ...): a at 0 and b at 2 kill the
    // first match; a at 3 has no b before 6 and is reported when the event at 6 arrives.
    let pattern = Pattern::begin("a")
        .where_(is(0))
        .not_followed_by("b")
        .where_(is(1))
        .within(3);
    let compiled = pattern.compile().expect("valid");
    let values = [0u8, 2, 1, 0, 2, 2, 2, 0];
    let mut state = NfaState::default();
    let limit = Limit {
        max_partials: 10,
        policy: OverflowPolicy::Fail,
    };
    let mut reported = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let mut out = NfaOutput::new(true);
        compiled
            .process(&mut state, (i, v), i as u64, i as i64, limit, &mut out)
            .expect("ok");
        assert!(out.timeouts.is_empty(), "waiting matches are no timeouts");
        for m in out.matches {
            reported.push((i, m.first("a").expect("a").0));
        }
    }
    assert_eq!(reported, vec![(6, 3)], "reported once its bound passed");
    let mut out = NfaOutput::new(true);
    compiled.advance_time(&mut state, 10, &mut out);
    let flushed: Vec<usize> = out.matches.iter().map(|m| m.events()[0].event.0).collect();
    assert_eq!(flushed, vec![7], "the watermark flushes the last one");
    assert!(state.is_empty());
    assert_eq!(state.buffer.sizes(), (0, 0));
    // The same pattern ending in a loop: every run of a's is its own match.
    let looping = Pattern::begin("a")
        .where_(is(0))
        .one_or_more()
        .not_followed_by("b")
        .where_(is(1))
        .within(10);
    assert_eq!(
        matches_of(looping.clone(), &[0, 0, 2]),
        vec![vec![0], vec![0, 1], vec![1]]
    );
    assert!(matches_of(looping, &[0, 0, 1]).is_empty());
}

#[test]
fn looping_groups_stay_bounded_and_are_cleaned_when_within_expires() {
    // (a b)+ followed by c within 20: every a starts a partial match and every repetition
    // goes on; the limit bounds them and `within` frees them with their events.
    let pattern = Pattern::begin_group(pair(false))
        .one_or_more()
        .followed_by("c")
        .where_(is(3))
        .within(20);
    let compiled = pattern.compile().expect("valid");
    let limit = Limit {
        max_partials: 8,
        policy: OverflowPolicy::DropOldest,
    };
    let mut state = NfaState::default();
    let mut out = NfaOutput::new(true);
    for seq in 0..200u64 {
        let value = if seq % 2 == 0 { 1 } else { 2 };
        compiled
            .process(
                &mut state,
                (seq as usize, value),
                seq,
                seq as i64,
                limit,
                &mut out,
            )
            .expect("drops");
        state.check();
        assert!(state.partial_count() <= 8);
        assert!(state.buffer.sizes().0 <= 20, "{:?}", state.buffer.sizes());
    }
    assert!(out.dropped > 0, "the limit was reached");
    let mut out = NfaOutput::new(true);
    compiled.advance_time(&mut state, i64::MAX, &mut out);
    let repetitions = out.timeouts.iter().map(|(m, _)| m.get("a").len()).max();
    assert!(
        repetitions > Some(1),
        "partial matches inside the loop time out"
    );
    assert!(state.is_empty());
    assert_eq!(state.buffer.sizes(), (0, 0));
}
