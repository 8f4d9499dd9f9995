//! Evictors: remove elements from a window before or after its function runs (Flink's
//! `Evictor`). A window with an evictor keeps all its elements (with their timestamps), and the
//! reduce, aggregate or process function runs over what is left at each firing.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::functions::{WindowContext, WindowFunctionCore};
use crate::operator::{Collector, FunctionError, RuntimeContext};

/// An element with its timestamp, as evictors see it (and as a window with an evictor keeps it,
/// in checkpoints too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimestampedValue<T> {
    /// The element.
    pub value: T,
    /// Its event-time timestamp, if it has one.
    pub timestamp: Option<i64>,
}

/// Removes elements from a window's contents (Flink's `Evictor`).
pub trait Evictor<T>: Clone + Send + 'static {
    /// Before the window function runs.
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, window: &WindowContext);
    /// After the window function ran.
    fn evict_after(&mut self, _elements: &mut Vec<TimestampedValue<T>>, _window: &WindowContext) {}
}

/// Keeps the last `max_count` elements (Flink's `CountEvictor`, evicting before).
#[derive(Debug, Clone, Copy)]
pub struct CountEvictor {
    max_count: usize,
}

impl CountEvictor {
    /// Keeps at most `max_count` elements.
    pub fn of(max_count: usize) -> Self {
        Self { max_count }
    }
}

impl<T> Evictor<T> for CountEvictor {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, _window: &WindowContext) {
        if elements.len() > self.max_count {
            let excess = elements.len() - self.max_count;
            elements.drain(..excess);
        }
    }
}

/// Keeps the elements at most `window_size_ms` older than the newest one (Flink's
/// `TimeEvictor`, evicting before): an element is removed when its timestamp is at or below
/// `max_timestamp - window_size_ms`. Elements without timestamp are kept.
#[derive(Debug, Clone, Copy)]
pub struct TimeEvictor {
    window_size_ms: i64,
}

impl TimeEvictor {
    /// Keeps `window_size_ms` of elements.
    pub fn of(window_size_ms: i64) -> Self {
        Self { window_size_ms }
    }
}

impl<T> Evictor<T> for TimeEvictor {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, _window: &WindowContext) {
        let Some(newest) = elements.iter().filter_map(|e| e.timestamp).max() else {
            return;
        };
        let cutoff = newest.saturating_sub(self.window_size_ms);
        elements.retain(|e| e.timestamp.is_none_or(|t| t > cutoff));
    }
}

/// A type-erased evictor, so windowed streams need no evictor type parameter.
pub(crate) struct BoxedEvictor<T>(Box<dyn DynEvictor<T>>);

trait DynEvictor<T>: Send {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, window: &WindowContext);
    fn evict_after(&mut self, elements: &mut Vec<TimestampedValue<T>>, window: &WindowContext);
    fn clone_box(&self) -> Box<dyn DynEvictor<T>>;
}

impl<T: 'static, E: Evictor<T>> DynEvictor<T> for E {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, window: &WindowContext) {
        Evictor::evict_before(self, elements, window);
    }
    fn evict_after(&mut self, elements: &mut Vec<TimestampedValue<T>>, window: &WindowContext) {
        Evictor::evict_after(self, elements, window);
    }
    fn clone_box(&self) -> Box<dyn DynEvictor<T>> {
        Box::new(self.clone())
    }
}

impl<T: 'static> BoxedEvictor<T> {
    pub(crate) fn new<E: Evictor<T>>(evictor: E) -> Self {
        Self(Box::new(evictor))
    }
}

impl<T> Clone for BoxedEvictor<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl<T: Send + 'static> Evictor<T> for BoxedEvictor<T> {
    fn evict_before(&mut self, elements: &mut Vec<TimestampedValue<T>>, window: &WindowContext) {
        self.0.evict_before(elements, window);
    }
    fn evict_after(&mut self, elements: &mut Vec<TimestampedValue<T>>, window: &WindowContext) {
        self.0.evict_after(elements, window);
    }
}

/// A window function over all elements, with an evictor around it.
#[derive(Clone)]
pub(crate) struct EvictingWindow<F, E> {
    pub(crate) function: F,
    pub(crate) evictor: E,
}

impl<K, T, F, E> WindowFunctionCore<K, T> for EvictingWindow<F, E>
where
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
    F: WindowFunctionCore<K, T>,
    E: Evictor<T>,
{
    fn initialize_fields(
        &mut self,
        ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), FunctionError> {
        self.function.initialize_fields(ctx)
    }
    fn snapshot_fields(
        &self,
        ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), FunctionError> {
        self.function.snapshot_fields(ctx)
    }
    type Acc = Vec<TimestampedValue<T>>;
    type Out = F::Out;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.function.open(ctx)
    }

    fn add(&mut self, contents: Option<Self::Acc>, value: T, timestamp: Option<i64>) -> Self::Acc {
        let mut elements = contents.unwrap_or_default();
        elements.push(TimestampedValue { value, timestamp });
        elements
    }

    fn merge(&mut self, mut a: Self::Acc, b: Self::Acc) -> Self::Acc {
        a.extend(b);
        a
    }

    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: &mut Self::Acc,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.evictor.evict_before(contents, ctx);
        let mut folded: Option<F::Acc> = None;
        for element in contents.iter() {
            folded = Some(
                self.function
                    .add(folded, element.value.clone(), element.timestamp),
            );
        }
        if let Some(mut folded) = folded {
            self.function.emit(key, ctx, &mut folded, out);
        }
        self.evictor.evict_after(contents, ctx);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::window::TimeWindow;

    fn ctx() -> WindowContext {
        WindowContext {
            window: TimeWindow::GLOBAL,
            current_watermark: 0,
            current_processing_time: 0,
        }
    }

    fn values(timestamps: &[i64]) -> Vec<TimestampedValue<i64>> {
        timestamps
            .iter()
            .map(|t| TimestampedValue {
                value: *t,
                timestamp: Some(*t),
            })
            .collect()
    }

    #[test]
    fn count_evictor_keeps_the_last_elements() {
        let mut elements = values(&[1, 2, 3, 4, 5]);
        Evictor::<i64>::evict_before(&mut CountEvictor::of(3), &mut elements, &ctx());
        assert_eq!(elements, values(&[3, 4, 5]));
    }

    #[test]
    fn time_evictor_keeps_recent_elements() {
        let mut elements = values(&[10, 25, 31, 40]);
        Evictor::<i64>::evict_before(&mut TimeEvictor::of(15), &mut elements, &ctx());
        assert_eq!(elements, values(&[31, 40]), "25 <= 40 - 15 is evicted");
    }
}
