//! Windows: assignment (the pure core), the window functions, and the keyed window operator
//! (`WindowOperator`), with Apache Flink's semantics.
//!
//! A Flink user must get the same windows from the same data, so everything here mirrors Flink's
//! code, not just its documentation: [`TimeWindow`] (`intersects`, `cover`, `max_timestamp`),
//! [`window_start_with_offset`] (`TimeWindow.getWindowStartWithOffset`), the tumbling, sliding
//! and session assigners for event and processing time, and [`MergingWindowSet`] (Flink's
//! `MergingWindowSet` for session windows). Each item's docs say which Flink code it follows and
//! where, if anywhere, it deliberately differs.
//!
//! ## Design
//!
//! - Sans-IO, like every operator core: no clock, no I/O, no state backend. Time is an argument:
//!   the caller picks the record's timestamp (event time) or its current processing time
//!   (processing time) with [`WindowAssign::assignment_time`] and passes it to
//!   [`WindowAssign::assign`], which appends the windows to a caller-owned `Vec` (no allocation
//!   per record once it has grown). State merging is the caller's too: [`MergingWindowSet`]
//!   only tracks which window's state holds which in-flight window, and tells the caller what to
//!   merge through a callback ([`WindowMerge`]).
//! - One struct per assigner kind ([`TumblingWindows`], [`SlidingWindows`], [`SessionWindows`]),
//!   each for either [`TimeDomain`], behind the [`WindowAssign`] trait; [`WindowAssigner`] is the
//!   closed enum the window operator holds.
//! - Deterministic: the merging set is a `BTreeMap`, and where Flink leaves a choice to `HashMap`
//!   iteration order (which state window survives a merge) we take the earliest window.
//! - Bad parameters (`size <= 0`, `slide <= 0`, `|offset| >=` size or slide, `gap <= 0`, too many
//!   sliding windows per element) are a [`WindowError`] from the constructor, and times whose
//!   windows do not fit in `i64` are a [`WindowError`] from `assign`: nothing here panics on
//!   input, and nothing wraps around as Java's `long` arithmetic does.
//!
//! ## What lives where
//!
//! Each file imports only files below it in this list, so none imports another in a circle:
//!
//! - `operator.rs`: `WindowOperator` chooses one path and dispatches to it once per call;
//! - `generic_path.rs`, `pane_path.rs`, `session_path.rs`: the three paths, one type each,
//!   behind the `WindowPath` trait of `path.rs` (with `WindowBase`, what all paths share);
//! - `panes.rs` (heap panes and the `PaneStore` trait), `backend_panes.rs` (panes in the state
//!   backend), `sessions.rs` (sessions on the heap or in the backend): the fast paths' stores;
//! - `trigger.rs`, `evictor.rs`, `merging.rs`, `fired.rs` (fired marks of restored keys),
//!   `key_order.rs`, `backend.rs` (state backend helpers);
//! - `functions.rs`: `WindowFunctionCore`, [`WindowContext`] and the `Emitter`, which every
//!   path and store uses; `assigner.rs`: the assigners and [`TimeWindow`].
//!
//! ## Invariants
//!
//! - Every window assigned for a time contains it: `start <= time < end`, for every time that
//!   does not fail, negative ones included (the FLINK-26334 formula; see
//!   [`window_start_with_offset`]).
//! - Tumbling (sliding) window starts are `offset + k * size` (`offset + k * slide`).
//! - The windows of a [`MergingWindowSet`] are pairwise non-intersecting by Flink's `intersects`
//!   (touching windows merge), and are exactly what sorting all added windows and merging the
//!   intersecting ones would give; state windows are distinct and never change while their
//!   window is in flight.

mod assigner;
mod backend;
mod backend_panes;
mod evictor;
mod fired;
mod functions;
mod generic_path;
mod key_order;
mod merging;
mod operator;
mod pane_path;
mod panes;
mod path;
mod session_path;
mod sessions;
pub mod trigger;

pub use assigner::{
    GlobalWindow, GlobalWindows, SLIDING_WINDOWS_MAX, SessionWindows, SlidingWindows, TimeDomain,
    TimeWindow, TumblingWindows, Window, WindowAssign, WindowAssigner, WindowError,
    window_start_with_offset,
};
pub(crate) use backend::{decode_entry_key, store_config};
pub(crate) use evictor::{BoxedEvictor, EvictingWindow};
pub use evictor::{CountEvictor, Evictor, TimeEvictor, TimestampedValue};
pub use functions::WindowContext;
pub(crate) use functions::WindowFunctionCore;
pub(crate) use functions::{
    AggregateProcessWindow, AggregateWindow, ProcessWindow, ReduceProcessWindow, ReduceWindow,
};
pub use merging::{MergingWindowSet, WindowMerge};
pub(crate) use operator::WindowOperator;
