//! Window table-valued functions: which windows a row at event time `ts` belongs to.
//!
//! Pure functions of the time; the window aggregation operator calls them. Windows are
//! half-open, `[start, end)`, and a window fires when the watermark reaches `end - 1` (its
//! largest timestamp), as in Flink.

use serde::{Deserialize, Serialize};

/// A window TVF with its sizes in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    /// `TUMBLE(TABLE t, DESCRIPTOR(ts), size [, offset])`.
    Tumble {
        /// The window size.
        size_ms: i64,
        /// The alignment offset.
        offset_ms: i64,
    },
    /// `HOP(TABLE t, DESCRIPTOR(ts), slide, size [, offset])`.
    Hop {
        /// How far apart windows start.
        slide_ms: i64,
        /// The window size.
        size_ms: i64,
        /// The alignment offset.
        offset_ms: i64,
    },
    /// `CUMULATE(TABLE t, DESCRIPTOR(ts), step, size)`: windows of one start growing by `step`
    /// up to `size`.
    Cumulate {
        /// The growth step.
        step_ms: i64,
        /// The largest window.
        size_ms: i64,
    },
    /// `SESSION(TABLE t, DESCRIPTOR(ts), gap)`: windows of activity separated by at least
    /// `gap` without rows, per group key.
    Session {
        /// The inactivity gap.
        gap_ms: i64,
    },
}

impl WindowKind {
    /// Checks the sizes: positive, a hop's slide and a cumulation's step dividing evenly.
    ///
    /// # Errors
    ///
    /// What is wrong with the sizes.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err(format!(
                    "the {name} of a window must be positive, got {v} ms"
                ))
            }
        };
        match *self {
            Self::Tumble { size_ms, offset_ms } => {
                positive("size", size_ms)?;
                if offset_ms.abs() >= size_ms {
                    return Err("the offset of a window must be smaller than its size".into());
                }
            }
            Self::Hop {
                slide_ms,
                size_ms,
                offset_ms,
            } => {
                positive("slide", slide_ms)?;
                positive("size", size_ms)?;
                if offset_ms.abs() >= slide_ms {
                    return Err("the offset of a window must be smaller than its slide".into());
                }
                // Bound the windows per row, so one row never makes unbounded work.
                if size_ms / slide_ms > 10_000 {
                    return Err(format!(
                        "HOP of size {size_ms} ms every {slide_ms} ms puts each row in more than \
                         10000 windows"
                    ));
                }
            }
            Self::Cumulate { step_ms, size_ms } => {
                positive("step", step_ms)?;
                positive("size", size_ms)?;
                if size_ms % step_ms != 0 {
                    return Err(format!(
                        "the size of a CUMULATE window ({size_ms} ms) must be a whole multiple \
                         of its step ({step_ms} ms)"
                    ));
                }
                if size_ms / step_ms > 10_000 {
                    return Err("a CUMULATE window of more than 10000 steps".into());
                }
            }
            Self::Session { gap_ms } => positive("gap", gap_ms)?,
        }
        Ok(())
    }

    /// The windows `[start, end)` holding a row at `ts` (for a session: its own window
    /// `[ts, ts + gap)`, before merging), in order of their end. Windows that would overflow
    /// `i64` are left out.
    pub fn assign(&self, ts: i64) -> Vec<(i64, i64)> {
        let aligned = |ts: i64, offset: i64, size: i64| -> Option<i64> {
            ts.checked_sub((ts.wrapping_sub(offset)).rem_euclid(size))
        };
        match *self {
            Self::Tumble { size_ms, offset_ms } => aligned(ts, offset_ms, size_ms)
                .and_then(|start| start.checked_add(size_ms).map(|end| (start, end)))
                .into_iter()
                .collect(),
            Self::Hop {
                slide_ms,
                size_ms,
                offset_ms,
            } => {
                let mut windows = Vec::new();
                let Some(mut start) = aligned(ts, offset_ms, slide_ms) else {
                    return windows;
                };
                while start > ts.saturating_sub(size_ms) {
                    if let Some(end) = start.checked_add(size_ms) {
                        windows.push((start, end));
                    }
                    let Some(previous) = start.checked_sub(slide_ms) else {
                        break;
                    };
                    start = previous;
                }
                windows.reverse();
                windows
            }
            Self::Cumulate { step_ms, size_ms } => {
                let Some(start) = aligned(ts, 0, size_ms) else {
                    return Vec::new();
                };
                (1..=size_ms / step_ms)
                    .filter_map(|k| start.checked_add(k * step_ms))
                    .filter(|&end| end > ts)
                    .map(|end| (start, end))
                    .collect()
            }
            Self::Session { gap_ms } => ts
                .checked_add(gap_ms)
                .map(|end| (ts, end))
                .into_iter()
                .collect(),
        }
    }

    /// Whether windows of this kind merge (sessions).
    pub fn is_merging(&self) -> bool {
        matches!(self, Self::Session { .. })
    }

    /// The SQL name of the function.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tumble { .. } => "TUMBLE",
            Self::Hop { .. } => "HOP",
            Self::Cumulate { .. } => "CUMULATE",
            Self::Session { .. } => "SESSION",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_of_each_kind() {
        let tumble = WindowKind::Tumble {
            size_ms: 10,
            offset_ms: 0,
        };
        assert_eq!(tumble.assign(7), vec![(0, 10)]);
        assert_eq!(tumble.assign(-1), vec![(-10, 0)]);
        let hop = WindowKind::Hop {
            slide_ms: 5,
            size_ms: 10,
            offset_ms: 0,
        };
        assert_eq!(hop.assign(7), vec![(0, 10), (5, 15)]);
        let cumulate = WindowKind::Cumulate {
            step_ms: 5,
            size_ms: 15,
        };
        assert_eq!(cumulate.assign(7), vec![(0, 10), (0, 15)]);
        assert_eq!(cumulate.assign(16), vec![(15, 20), (15, 25), (15, 30)]);
        assert!(
            WindowKind::Cumulate {
                step_ms: 4,
                size_ms: 10
            }
            .validate()
            .is_err()
        );
    }

    proptest! {
        /// Every window holds the row, and every window of the grid that holds it is there.
        #[test]
        fn assigned_windows_are_exactly_the_ones_holding_the_row(
            ts in -10_000i64..10_000, slide in 1i64..50, factor in 1i64..6,
        ) {
            let size = slide * factor;
            let hop = WindowKind::Hop { slide_ms: slide, size_ms: size, offset_ms: 0 };
            let windows = hop.assign(ts);
            prop_assert_eq!(windows.len() as i64, factor);
            for (start, end) in &windows {
                prop_assert!(*start <= ts && ts < *end);
                prop_assert_eq!(start.rem_euclid(slide), 0);
                prop_assert_eq!(end - start, size);
            }
            let cumulate = WindowKind::Cumulate { step_ms: slide, size_ms: size };
            for (start, end) in cumulate.assign(ts) {
                prop_assert!(start <= ts && ts < end && end - start <= size);
                prop_assert_eq!(start.rem_euclid(size), 0);
            }
        }
    }
}
