//! `CEP::pattern(stream, pattern)` and the [`PatternStream`] it returns: what users call.

use std::sync::Arc;

use super::dynamic::{DynamicCepOperator, FieldAccess, PatternUpdate};
use super::function::{FlatSelect, PatternProcessFunction, Select, SelectWithTimeout};
use super::operator::{ActivePattern, CepOperator, CepSettings, Epochs};
use super::{Match, OverflowPolicy, Pattern};
use crate::api::{ConnectedStreams, Data, DataStream, Key, KeyedStream, OutputTag};
use crate::error::GraphError;
use crate::operator::Collector;

/// Partial matches a key may hold by default.
pub const MAX_PARTIAL_MATCHES_DEFAULT: usize = 10_000;

/// Events a key may have waiting for the watermark by default.
pub const MAX_PENDING_EVENTS_DEFAULT: usize = 1_000_000;

/// The entry point of CEP (Flink's `CEP` class).
#[derive(Debug)]
pub struct CEP;

impl CEP {
    /// Matches `pattern` over each key of `input` in event time.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::cep::{CEP, Pattern};
    /// use eichhorn::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), eichhorn::Error> {
    /// let env = StreamEnv::new();
    /// // (user, failed, timestamp_ms)
    /// let logins = env.from_collection(vec![
    ///     ("ann".to_string(), true, 1_000i64),
    ///     ("bob".to_string(), true, 1_500),
    ///     ("ann".to_string(), true, 2_000),
    ///     ("ann".to_string(), false, 3_000),
    /// ]);
    /// let keyed = logins
    ///     .assign_timestamps_and_watermarks(
    ///         WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &(String, bool, i64), _| e.2),
    ///     )
    ///     .key_by(|e| e.0.clone());
    /// let pattern = Pattern::begin("first")
    ///     .where_(|e: &(String, bool, i64)| e.1)
    ///     .next("second")
    ///     .where_(|e: &(String, bool, i64)| e.1)
    ///     .within(10_000);
    /// let alerts = CEP::pattern(keyed, pattern)
    ///     .select(|m| format!("{} {}", m.first("first").unwrap().0, m.first("second").unwrap().2))
    ///     .collect_sink();
    /// env.execute("login alerts").await?;
    /// assert_eq!(alerts.take(), vec!["ann 2000".to_string()]);
    /// # Ok(()) }
    /// ```
    pub fn pattern<K: Key, T: Data>(
        input: KeyedStream<K, T>,
        pattern: Pattern<T>,
    ) -> PatternStream<K, T> {
        PatternStream {
            input,
            pattern,
            late_tag: None,
            max_partial_matches: MAX_PARTIAL_MATCHES_DEFAULT,
            policy: OverflowPolicy::DropOldest,
            max_pending_events: MAX_PENDING_EVENTS_DEFAULT,
            processing_time: false,
            parallelism: None,
        }
    }

    /// Matches `pattern` over a stream that is not keyed (Flink's `CEP.pattern` on a
    /// `DataStream`): every event belongs to one sequence, matched by one subtask (the CEP
    /// operator runs at parallelism 1), in event time unless
    /// [`in_processing_time`](PatternStream::in_processing_time) is chosen.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::cep::{CEP, Pattern};
    /// use eichhorn::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), eichhorn::Error> {
    /// let env = StreamEnv::new();
    /// env.set_parallelism(2);
    /// // Temperatures with their timestamps: two readings above 30 in a row, whatever the sensor.
    /// let readings = env
    ///     .from_collection(vec![(31i64, 1i64), (29, 2), (32, 3), (33, 4)])
    ///     .assign_timestamps_and_watermarks(
    ///         WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|r: &(i64, i64), _| r.1),
    ///     );
    /// let hot = |r: &(i64, i64)| r.0 > 30;
    /// let pattern = Pattern::begin("a").where_(hot).next("b").where_(hot);
    /// let alerts = CEP::pattern_unkeyed(readings, pattern)
    ///     .select(|m| (m.first("a").unwrap().1, m.first("b").unwrap().1))
    ///     .collect_sink();
    /// env.execute("unkeyed").await?;
    /// assert_eq!(alerts.take(), vec![(3, 4)]);
    /// # Ok(()) }
    /// ```
    pub fn pattern_unkeyed<T: Data>(
        input: DataStream<T>,
        pattern: Pattern<T>,
    ) -> PatternStream<(), T> {
        let mut stream = Self::pattern(input.key_by(|_: &T| ()), pattern);
        stream.parallelism = Some(1);
        stream
    }
}

impl CEP {
    /// Matches the patterns that `updates` adds, replaces and removes while the job runs
    /// over each key of `input`, in event time (see [`PatternDescription`](super::PatternDescription)).
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::cep::*;
    /// use eichhorn::prelude::*;
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct Temp { sensor: u32, celsius: i64, ts: i64 }
    /// impl FieldAccess for Temp {
    ///     fn field(&self, name: &str) -> Option<Value> {
    ///         match name { "celsius" => Some(Value::Int(self.celsius)), _ => None }
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), eichhorn::Error> {
    /// let env = StreamEnv::new();
    /// let hot = ConditionExpr::compare("celsius", CmpOp::Ge, Value::Int(30));
    /// let rule = PatternDescription {
    ///     id: "two-hot".into(),
    ///     stages: vec![
    ///         StageDescription::new("a", StageLink::Begin, hot.clone()),
    ///         StageDescription::new("b", StageLink::Next, hot),
    ///     ],
    ///     within_ms: None,
    ///     skip: AfterMatchSkipStrategy::NoSkip,
    /// };
    /// let updates = env.from_collection(vec![PatternUpdate::Upsert(rule)]);
    /// let temps = env
    ///     .from_collection(vec![Temp { sensor: 1, celsius: 31, ts: 1 }, Temp { sensor: 1, celsius: 35, ts: 2 }])
    ///     .assign_timestamps_and_watermarks(
    ///         WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|t: &Temp, _| t.ts),
    ///     )
    ///     .key_by(|t| t.sensor);
    /// let alerts = CEP::dynamic_patterns(temps, updates)
    ///     .select(|m| format!("{} {}", m.pattern(), m.events().len()))
    ///     .collect_sink();
    /// env.execute("dynamic").await?;
    /// assert_eq!(alerts.take(), vec!["two-hot 2".to_string()]);
    /// # Ok(()) }
    /// ```
    pub fn dynamic_patterns<K: Key, T: Data + FieldAccess>(
        input: KeyedStream<K, T>,
        updates: DataStream<PatternUpdate>,
    ) -> DynamicPatternStream<K, T> {
        DynamicPatternStream {
            input,
            updates,
            late_tag: None,
            rejected: None,
            max_partial_matches: MAX_PARTIAL_MATCHES_DEFAULT,
            policy: OverflowPolicy::DropOldest,
            max_pending_events: MAX_PENDING_EVENTS_DEFAULT,
        }
    }
}

/// A keyed stream with patterns that change while the job runs: [`CEP::dynamic_patterns`].
pub struct DynamicPatternStream<K, T> {
    input: KeyedStream<K, T>,
    updates: DataStream<PatternUpdate>,
    late_tag: Option<OutputTag<T>>,
    rejected: Option<OutputTag<String>>,
    max_partial_matches: usize,
    policy: OverflowPolicy,
    max_pending_events: usize,
}

impl<K, T> std::fmt::Debug for DynamicPatternStream<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicPatternStream")
            .field("max_partial_matches", &self.max_partial_matches)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<K: Key, T: Data + FieldAccess> DynamicPatternStream<K, T> {
    /// As [`PatternStream::side_output_late_data`].
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.clone());
        self
    }

    /// Sends the error of every rejected update (a description that does not compile) to
    /// `tag`; rejected updates are counted as dropped records either way.
    pub fn side_output_rejected_updates(mut self, tag: &OutputTag<String>) -> Self {
        self.rejected = Some(tag.clone());
        self
    }

    /// As [`PatternStream::max_partial_matches_per_key`] (per pattern).
    pub fn max_partial_matches_per_key(mut self, max: usize, policy: OverflowPolicy) -> Self {
        self.max_partial_matches = max;
        self.policy = policy;
        self
    }

    /// As [`PatternStream::max_pending_events_per_key`].
    pub fn max_pending_events_per_key(mut self, max: usize) -> Self {
        self.max_pending_events = max;
        self
    }

    /// Handles matches of every pattern with `function` ([`Match::pattern`] names the one).
    pub fn process<O: Data, F: PatternProcessFunction<K, T, O>>(
        self,
        function: F,
    ) -> DataStream<O> {
        if self.max_partial_matches == 0 || self.max_pending_events == 0 {
            self.input.env().record_error(GraphError::InvalidApiUse(
                "dynamic CEP: the per-key limits must be at least 1".to_string(),
            ));
        }
        let settings = CepSettings {
            late_tag: self.late_tag,
            max_partial_matches: self.max_partial_matches.max(1),
            policy: self.policy,
            max_pending_events: self.max_pending_events.max(1),
            processing_time: false,
        };
        let operator =
            DynamicCepOperator::new(self.input.selector(), function, settings, self.rejected);
        ConnectedStreams::new(self.input.into_stream(), self.updates.broadcast())
            .transform("Dynamic CEP", operator)
    }

    /// One output per match.
    pub fn select<O: Data>(
        self,
        f: impl FnMut(Match<T>) -> O + Clone + Send + 'static,
    ) -> DataStream<O> {
        self.process(Select(f))
    }

    /// One output per match, timed-out partial matches to `tag`.
    pub fn select_with_timeout<O: Data, U: Data>(
        self,
        tag: &OutputTag<U>,
        timeout: impl FnMut(Match<T>, i64) -> U + Clone + Send + 'static,
        select: impl FnMut(Match<T>) -> O + Clone + Send + 'static,
    ) -> DataStream<O> {
        self.process(SelectWithTimeout {
            select,
            timeout,
            tag: tag.clone(),
        })
    }
}

/// A keyed stream with a pattern to match (Flink's `PatternStream`): choose limits and side
/// outputs, then `select`, `flat_select` or `process` the matches.
pub struct PatternStream<K, T> {
    input: KeyedStream<K, T>,
    pattern: Pattern<T>,
    late_tag: Option<OutputTag<T>>,
    max_partial_matches: usize,
    policy: OverflowPolicy,
    max_pending_events: usize,
    processing_time: bool,
    /// The CEP operator's parallelism, if fixed (1 for an unkeyed stream).
    parallelism: Option<u32>,
}

impl<K, T> std::fmt::Debug for PatternStream<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternStream")
            .field("pattern", &self.pattern)
            .field("max_partial_matches", &self.max_partial_matches)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<K: Key, T: Data> PatternStream<K, T> {
    /// Matches in processing time (Flink's `inProcessingTime()`): each event is matched when
    /// it arrives, in arrival order, with the subtask's processing time as its timestamp;
    /// `within` counts processing time and partial matches time out on processing-time
    /// timers. Nothing waits for a watermark and no event is late; timestamps on the records
    /// are not needed. As in Flink, the end of the input does not fire the pending time
    /// bounds: partial matches still open then (and matches waiting on a final
    /// `not_followed_by`) are not reported.
    pub fn in_processing_time(mut self) -> Self {
        self.processing_time = true;
        self
    }

    /// Sends events that arrive at or below the watermark (late: never matched) to `tag`;
    /// they are counted as late records in the job result either way.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.clone());
        self
    }

    /// At most `max` partial matches per key; past it, `policy` drops the oldest (counted as
    /// dropped records in the job result) or fails the job. Default: 10,000, drop the oldest.
    pub fn max_partial_matches_per_key(mut self, max: usize, policy: OverflowPolicy) -> Self {
        self.max_partial_matches = max;
        self.policy = policy;
        self
    }

    /// At most `max` events per key waiting for the watermark; past it the job fails (a
    /// watermark that does not advance). Default: 1,000,000.
    pub fn max_pending_events_per_key(mut self, max: usize) -> Self {
        self.max_pending_events = max;
        self
    }

    /// Handles matches (and, if it wants them, timed-out partial matches) with `function`.
    pub fn process<O: Data, F: PatternProcessFunction<K, T, O>>(
        self,
        function: F,
    ) -> DataStream<O> {
        let env = self.input.env().clone();
        let compiled = match self.pattern.compile() {
            Ok(compiled) => compiled,
            Err(error) => {
                env.record_error(GraphError::InvalidApiUse(error.to_string()));
                Pattern::<T>::begin("invalid")
                    .compile()
                    .unwrap_or_else(|_| unreachable!("a one-stage pattern compiles"))
            }
        };
        if self.max_partial_matches == 0 || self.max_pending_events == 0 {
            env.record_error(GraphError::InvalidApiUse(format!(
                "CEP pattern '{}': the per-key limits must be at least 1",
                compiled.name()
            )));
        }
        let name = format!("CEP {}", compiled.name());
        let patterns = vec![ActivePattern {
            id: compiled.name().to_string(),
            version: 0,
            compiled: Arc::new(compiled),
        }];
        let settings = CepSettings {
            late_tag: self.late_tag,
            max_partial_matches: self.max_partial_matches.max(1),
            policy: self.policy,
            max_pending_events: self.max_pending_events.max(1),
            processing_time: self.processing_time,
        };
        let operator = CepOperator::new(
            self.input.selector(),
            Epochs::fixed(patterns),
            function,
            settings,
        );
        let stream = self.input.into_stream().transform(&name, operator);
        match self.parallelism {
            Some(parallelism) => stream.set_parallelism(parallelism),
            None => stream,
        }
    }

    /// One output per match (Flink's `select`).
    pub fn select<O: Data>(
        self,
        f: impl FnMut(Match<T>) -> O + Clone + Send + 'static,
    ) -> DataStream<O> {
        self.process(Select(f))
    }

    /// Any number of outputs per match (Flink's `flatSelect`).
    pub fn flat_select<O: Data>(
        self,
        f: impl FnMut(Match<T>, &mut Collector<'_, O>) + Clone + Send + 'static,
    ) -> DataStream<O> {
        self.process(FlatSelect(f))
    }

    /// One output per match, and `timeout(partial match, timeout time)` per timed-out partial
    /// match to the side output `tag` (read it with `.side_output(&tag)`).
    pub fn select_with_timeout<O: Data, U: Data>(
        self,
        tag: &OutputTag<U>,
        timeout: impl FnMut(Match<T>, i64) -> U + Clone + Send + 'static,
        select: impl FnMut(Match<T>) -> O + Clone + Send + 'static,
    ) -> DataStream<O> {
        self.process(SelectWithTimeout {
            select,
            timeout,
            tag: tag.clone(),
        })
    }
}
