//! Handles returned by sinks.

use std::sync::{Arc, Mutex};

use super::env::StreamEnv;
use crate::graph::stream_graph::ChainingStrategy;
use crate::operator::NodeId;

/// The sink operator just added, to name or configure it (Flink's `DataStreamSink`).
#[derive(Debug, Clone)]
pub struct DataStreamSink {
    env: StreamEnv,
    pub(crate) node: NodeId,
}

impl DataStreamSink {
    pub(crate) fn new(env: StreamEnv, node: NodeId) -> Self {
        Self { env, node }
    }

    /// Names the sink.
    pub fn name(self, name: &str) -> Self {
        self.env.lock().graph.node_mut(self.node).name = name.to_string();
        self
    }

    /// Sets the sink's uid.
    pub fn uid(self, uid: &str) -> Self {
        self.env.lock().graph.node_mut(self.node).uid = Some(uid.to_string());
        self
    }

    /// Sets the sink's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        self.env.lock().graph.node_mut(self.node).parallelism = Some(parallelism);
        self
    }

    /// Never chains the sink to its input.
    pub fn disable_chaining(self) -> Self {
        self.env.lock().graph.node_mut(self.node).chaining = ChainingStrategy::Never;
        self
    }
}

/// The elements a collect sink received, shared with the job.
#[derive(Debug)]
pub struct CollectSink<T> {
    items: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
        }
    }
}

impl<T> CollectSink<T> {
    pub(crate) fn new() -> Self {
        Self {
            items: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Mutex<Vec<T>>> {
        self.items.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A panicking job thread cannot leave the Vec inconsistent (pushes are atomic).
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the elements received so far (in arrival order across subtasks).
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.lock())
    }

    /// How many elements were received and not taken yet.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no element is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
