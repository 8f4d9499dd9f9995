//! `ConnectedStreams<A, B>`: two streams of different types feeding one two-input operator.

use std::sync::Arc;

use super::datastream::{DataStream, Template};
use super::functions::{CoFlatMapFunction, CoMapFunction};
use super::key::Data;
use crate::graph::InputSide;
use crate::graph::{OperatorKind, OutputSelector, StreamNode};
use crate::operator::{
    CoFlatMapOperator, CoMapOperator, FnCoFlatMap, FnCoMap, TwoInputNode, TwoInputOperator,
};
use crate::runtime::head::{InputTask, TwoInputHead};
use crate::runtime::registry::{OperatorEntry, OperatorFactory, TypedPort, typed_chain};

/// Two connected streams (Flink's `ConnectedStreams`), consumed by `co_map` or `co_flat_map`.
#[derive(Debug)]
pub struct ConnectedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    pub(crate) fn new(first: DataStream<A>, second: DataStream<B>) -> Self {
        Self { first, second }
    }

    pub(crate) fn transform<O: Data, Op>(self, name: &str, operator: Op) -> DataStream<O>
    where
        Op: TwoInputOperator<A, B, Out = O> + Clone,
    {
        let state_schema = operator.state_schema();
        let template = Template::new(operator);
        let task_name = name.to_string();
        let factory = OperatorFactory::TwoInput(Arc::new(move |info, main, side| {
            let node = TwoInputNode::new(info, template.instance(), typed_chain::<O>(main), side);
            Box::new(TwoInputHead::new(task_name.clone(), Box::new(node))) as Box<dyn InputTask>
        }));
        let env = self.first.env.clone();
        let id = env.add_node(
            StreamNode {
                state_schema,
                ..StreamNode::new(OperatorKind::TwoInput, name)
            },
            OperatorEntry::new(factory, None, Some(TypedPort::<O>::arc())),
        );
        self.first.connect_to(id, InputSide::First);
        self.second.connect_to(id, InputSide::Second);
        DataStream::from_node(env, id, OutputSelector::Main)
    }

    /// Applies a [`CoProcessFunction`](super::functions::CoProcessFunction) (side outputs,
    /// timestamps).
    pub fn process<F>(self, f: F) -> DataStream<F::Out>
    where
        F: super::functions::CoProcessFunction<A, B>,
        F::Out: Data,
    {
        self.transform("Co-Process", crate::operator::CoProcessOperator(f))
            .with_default_uid::<F>()
    }

    /// Keys both streams (elements of one key from either stream meet in one subtask), for a
    /// [`KeyedCoProcessFunction`](super::functions::KeyedCoProcessFunction).
    pub fn key_by<K, KS1, KS2>(self, key1: KS1, key2: KS2) -> KeyedConnectedStreams<K, A, B>
    where
        K: super::Key,
        KS1: Fn(&A) -> K + Clone + Send + Sync + 'static,
        KS2: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        KeyedConnectedStreams {
            first: self.first.key_by(key1),
            second: self.second.key_by(key2),
        }
    }

    /// Maps elements of the first stream with `f1` and of the second with `f2` into one stream.
    pub fn co_map<O: Data, F1, F2>(self, f1: F1, f2: F2) -> DataStream<O>
    where
        F1: FnMut(A) -> O + Clone + Send + 'static,
        F2: FnMut(B) -> O + Clone + Send + 'static,
    {
        self.transform("Co-Map", CoMapOperator(FnCoMap(f1, f2)))
    }

    /// Applies a [`CoMapFunction`].
    pub fn co_map_function<F>(self, f: F) -> DataStream<F::Out>
    where
        F: CoMapFunction<A, B>,
        F::Out: Data,
    {
        self.transform("Co-Map", CoMapOperator(f))
            .with_default_uid::<F>()
    }

    /// Flat-maps elements of the first stream with `f1` and of the second with `f2`.
    pub fn co_flat_map<O: Data, I1, I2, F1, F2>(self, f1: F1, f2: F2) -> DataStream<O>
    where
        I1: IntoIterator<Item = O>,
        I2: IntoIterator<Item = O>,
        F1: FnMut(A) -> I1 + Clone + Send + 'static,
        F2: FnMut(B) -> I2 + Clone + Send + 'static,
    {
        self.transform("Co-Flat Map", CoFlatMapOperator(FnCoFlatMap(f1, f2)))
    }

    /// Applies a [`CoFlatMapFunction`].
    pub fn co_flat_map_function<F>(self, f: F) -> DataStream<F::Out>
    where
        F: CoFlatMapFunction<A, B>,
        F::Out: Data,
    {
        self.transform("Co-Flat Map", CoFlatMapOperator(f))
            .with_default_uid::<F>()
    }
}

/// Two connected streams keyed by the same key type (Flink's keyed `ConnectedStreams`).
#[derive(Debug)]
pub struct KeyedConnectedStreams<K, A, B> {
    first: super::KeyedStream<K, A>,
    second: super::KeyedStream<K, B>,
}

impl<K: super::Key, A: Data, B: Data> KeyedConnectedStreams<K, A, B> {
    /// Applies a [`KeyedCoProcessFunction`](super::functions::KeyedCoProcessFunction): keyed
    /// state and timers shared by both inputs of a key.
    pub fn process<F>(self, f: F) -> DataStream<F::Out>
    where
        F: super::functions::KeyedCoProcessFunction<Key = K, In1 = A, In2 = B>,
        F::Out: Data,
    {
        let key1 = self.first.selector();
        let key2 = self.second.selector();
        let operator = crate::operator::KeyedCoProcessOperator::new(key1, key2, f);
        ConnectedStreams::new(self.first.into_stream(), self.second.into_stream())
            .transform("Keyed Co-Process", operator)
            .with_default_uid::<F>()
    }
}
