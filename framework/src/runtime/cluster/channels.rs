//! Remote channel endpoints: the two proxy actors that stand in for a subtask on another node.
//!
//! A subtask sends `Data` to its consumers and `Credit` to its producers as actor messages and
//! does not know where they run. For a channel that crosses nodes, the peer it was wired to is a
//! proxy on its own node:
//!
//! ```text
//! node A                                              node B
//! producer ──Data──▶ OutputProxy ══ QUIC stream ══▶ (reader task) ──Data──▶ consumer
//! producer ◀─Credit── (reader task) ◀══ same stream ══ InputProxy ◀──Credit── consumer
//! ```
//!
//! One long-lived bidirectional stream per channel ([`PeerLink::open_channel`]), opened by the
//! producer's node when the JobManager says `Wire`: batch frames go one way, credit frames the
//! other. Order per channel is the stream's order; flow control is the subtasks' own credits,
//! unchanged (a proxy never holds more than the credits granted, because the producer never
//! sends more). A frame that does not decode, a stream that ends early or a lost connection
//! fails the subtask on this side with a message naming the channel and the peer; the
//! JobManager restarts the job as for any subtask failure.
//!
//! [`PeerLink::open_channel`]: crate::net::PeerLink::open_channel

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::exchange::{BatchCodec, ChannelId, ChannelMessageRef};
use crate::net::{FrameReader, FrameWriter};
use crate::runtime::protocol::{JobManagerMsg, SubtaskMsg};

/// Who to blame when a channel breaks: the local subtask at this end.
#[derive(Clone)]
pub(crate) struct Blame {
    /// Where failures go (the TaskManager's link to the JobManager).
    pub(crate) job_manager: ActorRef<JobManagerMsg>,
    /// The attempt.
    pub(crate) attempt: u32,
    /// The local subtask's flat index.
    pub(crate) index: usize,
}

impl Blame {
    fn fail(&self, message: String) {
        let _ = self.job_manager.send_message(JobManagerMsg::SubtaskFailed {
            attempt: self.attempt,
            index: self.index,
            operator: None,
            task: None,
            message,
            recoverable: true,
        });
    }
}

/// Makes sure a proxy has its stream's sending half, waiting for it on first use (the
/// TaskManager hands it over once the stream is open). `false` when it never will be: the
/// attempt is being torn down.
async fn await_stream(
    writer: &mut Option<FrameWriter>,
    pending: &mut Option<oneshot::Receiver<FrameWriter>>,
) -> bool {
    if writer.is_some() {
        return true;
    }
    match pending.take() {
        Some(pending) => match pending.await {
            Ok(stream) => {
                *writer = Some(stream);
                true
            }
            Err(_) => false,
        },
        None => false,
    }
}

/// Stands in for a consumer on another node: takes `Data` from a local producer and writes it
/// to the channel's stream; reads credits from it for the producer.
pub(crate) struct OutputProxy;

/// What an [`OutputProxy`] is built from.
pub(crate) struct OutputProxyArgs {
    pub(crate) channel: ChannelId,
    pub(crate) codec: BatchCodec,
    /// The sending half of the stream, once the TaskManager opened it (its receiving half
    /// goes to [`read_credits`]).
    pub(crate) stream: oneshot::Receiver<FrameWriter>,
    pub(crate) blame: Blame,
    /// Bytes this node's data channels sent, for the benchmark and the log.
    pub(crate) sent_bytes: Arc<AtomicU64>,
}

pub(crate) struct OutputProxyState {
    args_channel: ChannelId,
    codec: BatchCodec,
    pending: Option<oneshot::Receiver<FrameWriter>>,
    writer: Option<FrameWriter>,
    blame: Blame,
    sent_bytes: Arc<AtomicU64>,
    batch: Vec<u8>,
    frame: Vec<u8>,
}

impl std::fmt::Debug for OutputProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputProxyState")
            .field("channel", &self.args_channel)
            .finish_non_exhaustive()
    }
}

impl Actor for OutputProxy {
    type Msg = SubtaskMsg;
    type State = OutputProxyState;
    type Arguments = OutputProxyArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SubtaskMsg>,
        args: OutputProxyArgs,
    ) -> Result<OutputProxyState, ActorProcessingErr> {
        Ok(OutputProxyState {
            args_channel: args.channel,
            codec: args.codec,
            pending: Some(args.stream),
            writer: None,
            blame: args.blame,
            sent_bytes: args.sent_bytes,
            batch: Vec::new(),
            frame: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SubtaskMsg>,
        message: SubtaskMsg,
        state: &mut OutputProxyState,
    ) -> Result<(), ActorProcessingErr> {
        let SubtaskMsg::Data { batch, .. } = message else {
            return Ok(());
        };
        if !await_stream(&mut state.writer, &mut state.pending).await {
            // The attempt is being torn down.
            myself.stop(None);
            return Ok(());
        }
        state.batch.clear();
        state.frame.clear();
        let encoded = state.codec.encode(&batch, &mut state.batch).and_then(|()| {
            ChannelMessageRef::Data {
                channel: state.args_channel,
                frame: &state.batch,
            }
            .encode(&mut state.frame)
        });
        if let Err(error) = encoded {
            state.blame.fail(format!(
                "cannot encode a batch of {} for channel {} to another node: {error}",
                state.codec.type_name(),
                state.args_channel.channel
            ));
            myself.stop(None);
            return Ok(());
        }
        state
            .sent_bytes
            .fetch_add(state.frame.len() as u64, Ordering::Relaxed);
        if let Some(writer) = state.writer.as_mut()
            && let Err(error) = writer.send_frame(&state.frame).await
        {
            state.blame.fail(format!(
                "channel {} to another node broke: {error}",
                state.args_channel.channel
            ));
            myself.stop(None);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SubtaskMsg>,
        state: &mut OutputProxyState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(writer) = state.writer.as_mut() {
            writer.finish();
        }
        Ok(())
    }
}

/// Reads the credit frames of a channel's stream and hands them to the local producer. Runs
/// from the moment the stream is open: the producer sends nothing before its first credit.
pub(crate) async fn read_credits(
    mut reader: FrameReader,
    channel: ChannelId,
    producer: ActorRef<SubtaskMsg>,
    producer_output: usize,
    blame: Blame,
) {
    loop {
        match reader.next_frame().await {
            Ok(Some(frame)) => match ChannelMessageRef::decode(frame) {
                Ok(ChannelMessageRef::Credit {
                    channel: from,
                    credits,
                }) if from == channel => {
                    let message = SubtaskMsg::Credit {
                        channel: producer_output,
                        credits,
                    };
                    if producer.send_message(message).is_err() {
                        return;
                    }
                }
                Ok(other) => {
                    blame.fail(format!(
                        "channel {}: the consumer's node sent {:?} instead of a credit",
                        channel.channel,
                        other.channel()
                    ));
                    return;
                }
                Err(error) => {
                    blame.fail(format!(
                        "channel {}: a credit frame from the consumer's node does not decode: \
                         {error}",
                        channel.channel
                    ));
                    return;
                }
            },
            // The consumer finished its side: it needs no more credits to return.
            Ok(None) => return,
            Err(error) => {
                blame.fail(format!("channel {}: {error}", channel.channel));
                return;
            }
        }
    }
}

/// Stands in for a producer on another node: takes `Credit` from a local consumer and writes it
/// to the channel's stream; reads the batches from it for the consumer.
pub(crate) struct InputProxy;

/// What an [`InputProxy`] is built from.
pub(crate) struct InputProxyArgs {
    pub(crate) channel: ChannelId,
    /// The sending half of the stream, once the producer's node opened it (its receiving
    /// half goes to [`read_batches`]).
    pub(crate) stream: oneshot::Receiver<FrameWriter>,
    pub(crate) blame: Blame,
}

pub(crate) struct InputProxyState {
    channel: ChannelId,
    pending: Option<oneshot::Receiver<FrameWriter>>,
    writer: Option<FrameWriter>,
    blame: Blame,
    frame: Vec<u8>,
}

impl std::fmt::Debug for InputProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputProxyState")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Actor for InputProxy {
    type Msg = SubtaskMsg;
    type State = InputProxyState;
    type Arguments = InputProxyArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SubtaskMsg>,
        args: InputProxyArgs,
    ) -> Result<InputProxyState, ActorProcessingErr> {
        Ok(InputProxyState {
            channel: args.channel,
            pending: Some(args.stream),
            writer: None,
            blame: args.blame,
            frame: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SubtaskMsg>,
        message: SubtaskMsg,
        state: &mut InputProxyState,
    ) -> Result<(), ActorProcessingErr> {
        let SubtaskMsg::Credit { credits, .. } = message else {
            return Ok(());
        };
        if !await_stream(&mut state.writer, &mut state.pending).await {
            // The attempt is being torn down.
            myself.stop(None);
            return Ok(());
        }
        state.frame.clear();
        let message = ChannelMessageRef::Credit {
            channel: state.channel,
            credits,
        };
        if let Err(error) = message.encode(&mut state.frame) {
            state.blame.fail(format!("cannot encode a credit: {error}"));
            myself.stop(None);
            return Ok(());
        }
        if let Some(writer) = state.writer.as_mut()
            && let Err(error) = writer.send_frame(&state.frame).await
        {
            // The producer may have finished and closed its side; its last batches are read
            // already. A real loss shows on the data side.
            tracing::debug!(channel = state.channel.channel, %error, "credit not delivered");
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SubtaskMsg>,
        state: &mut InputProxyState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(writer) = state.writer.as_mut() {
            writer.finish();
        }
        Ok(())
    }
}

/// Reads the batch frames of a channel's stream, decodes them with the channel's type and
/// hands them to the local consumer, in order. Runs from the moment the stream arrives.
pub(crate) async fn read_batches(
    mut reader: FrameReader,
    channel: ChannelId,
    codec: BatchCodec,
    consumer: ActorRef<SubtaskMsg>,
    consumer_input: usize,
    blame: Blame,
) {
    loop {
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            // The producer's node finished the stream after the end of input.
            Ok(None) => return,
            Err(error) => {
                blame.fail(format!("channel {}: {error}", channel.channel));
                return;
            }
        };
        let batch = match ChannelMessageRef::decode(frame) {
            Ok(ChannelMessageRef::Data {
                channel: from,
                frame,
            }) if from == channel => codec.decode(frame),
            Ok(other) => {
                blame.fail(format!(
                    "channel {}: the producer's node sent a message for {:?}",
                    channel.channel,
                    other.channel()
                ));
                return;
            }
            Err(error) => {
                blame.fail(format!(
                    "channel {}: a frame from the producer's node does not decode: {error}",
                    channel.channel
                ));
                return;
            }
        };
        match batch {
            Ok(batch) => {
                let message = SubtaskMsg::Data {
                    channel: consumer_input,
                    batch,
                };
                if consumer.send_message(message).is_err() {
                    return;
                }
            }
            Err(error) => {
                blame.fail(format!(
                    "channel {}: a batch of {} from the producer's node does not decode: {error}",
                    channel.channel,
                    codec.type_name()
                ));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A remote channel on real QUIC endpoints on loopback, between a producer that spends
    //! credits ([`CreditOutbox`]) and a slow consumer ([`InputGate`]) that the test lets
    //! consume one batch at a time.

    use std::net::SocketAddr;
    use std::time::Duration;

    use ractor::Message;
    use tokio::sync::mpsc;

    use super::*;
    use crate::exchange::{ChannelBatch, CreditOutbox, ErasedBatch, InputGate, Record};
    use crate::net::{ClusterCa, Hello, NetNode, Role, TransportSettings};

    /// An actor that hands every message it gets to the test.
    struct Forward<M>(std::marker::PhantomData<fn() -> M>);

    impl<M: Message> Actor for Forward<M> {
        type Msg = M;
        type State = mpsc::Sender<M>;
        type Arguments = mpsc::Sender<M>;

        async fn pre_start(
            &self,
            _myself: ActorRef<M>,
            to_test: mpsc::Sender<M>,
        ) -> Result<mpsc::Sender<M>, ActorProcessingErr> {
            Ok(to_test)
        }

        async fn handle(
            &self,
            _myself: ActorRef<M>,
            message: M,
            to_test: &mut mpsc::Sender<M>,
        ) -> Result<(), ActorProcessingErr> {
            let _ = to_test.send(message).await;
            Ok(())
        }
    }

    async fn forward<M: Message>(capacity: usize) -> (ActorRef<M>, mpsc::Receiver<M>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let (actor, _) = Actor::spawn(None, Forward(std::marker::PhantomData), sender)
            .await
            .expect("spawns");
        (actor, receiver)
    }

    fn node(ca: &ClusterCa, name: &str) -> NetNode {
        let identity = ca.issue(name).expect("identity");
        NetNode::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &identity,
            Hello::new(name, Role::TaskManager { slots: 1 }),
            TransportSettings::default(),
        )
        .expect("bind")
    }

    const CREDITS: u32 = 3;
    const BATCHES: u64 = 40;
    const RECORDS_PER_BATCH: u64 = 500;

    fn batch(index: u64) -> ErasedBatch {
        let mut batch = ChannelBatch::with_capacity(RECORDS_PER_BATCH as usize);
        for i in 0..RECORDS_PER_BATCH {
            batch
                .records
                .push(Record::new(index * RECORDS_PER_BATCH + i));
        }
        ErasedBatch::new(batch)
    }

    /// Both ends' bookkeeping, checked after every event.
    struct Ends {
        outbox: CreditOutbox,
        gate: InputGate,
        /// Batches the producer handed to its output proxy (into the network).
        sent: u64,
        /// Batches the consumer's input gate took in.
        received: u64,
        /// Batches the consumer finished.
        consumed: u64,
        producer_rx: mpsc::Receiver<SubtaskMsg>,
        consumer_rx: mpsc::Receiver<SubtaskMsg>,
        failures: mpsc::Receiver<JobManagerMsg>,
        output_proxy: ActorRef<SubtaskMsg>,
        input_proxy: ActorRef<SubtaskMsg>,
    }

    impl Ends {
        /// Handles what arrives at either end until `done` holds, checking the bound after
        /// each event.
        async fn pump(&mut self, done: impl Fn(&Self) -> bool) {
            while !done(self) {
                tokio::select! {
                    biased;
                    Some(failure) = self.failures.recv() => {
                        panic!("the channel failed: {failure:?}");
                    }
                    Some(message) = self.producer_rx.recv() => {
                        let SubtaskMsg::Credit { channel: 0, credits } = message else {
                            panic!("the producer got something other than a credit");
                        };
                        self.outbox.handle_credit(0, credits);
                        while let Some((0, batch)) = self.outbox.poll_transmit() {
                            self.sent += 1;
                            let data = SubtaskMsg::Data { channel: 0, batch };
                            self.output_proxy.send_message(data).expect("proxy alive");
                        }
                    }
                    Some(message) = self.consumer_rx.recv() => {
                        let SubtaskMsg::Data { channel: 0, batch } = message else {
                            panic!("the consumer got something other than a batch");
                        };
                        // Panics if the producer's node sent a batch without credit.
                        self.gate.handle_batch(0, batch);
                        self.received += 1;
                    }
                }
                // The bound: whatever sits between the producer and the consumer (the output
                // proxy's mailbox, both QUIC stream buffers, the reader, the consumer's
                // mailbox and gate) is at most the credits the consumer granted.
                assert!(
                    self.sent - self.consumed <= u64::from(CREDITS),
                    "{} batches in flight with {CREDITS} credits",
                    self.sent - self.consumed
                );
            }
        }

        /// The consumer finishes its oldest batch and returns the credit.
        fn consume_one(&mut self) -> ErasedBatch {
            let (channel, batch) = self.gate.poll_batch().expect("a batch to consume");
            let credits = self.gate.consumed(channel);
            self.consumed += 1;
            let credit = SubtaskMsg::Credit {
                channel: 0,
                credits,
            };
            self.input_proxy.send_message(credit).expect("proxy alive");
            batch
        }
    }

    /// A slow consumer on another node holds the producer to its credits: the producer's node
    /// never puts more batches on the wire than the consumer granted, the rest waits in the
    /// producer's outbox (where the subtask stops taking input), and every batch arrives once,
    /// in order, as the consumer frees room.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_remote_consumer_bounds_what_the_producer_sends() {
        let test = async {
            let ca = ClusterCa::generate().expect("a CA");
            let producer_node = node(&ca, "tm-producer");
            let consumer_node = std::sync::Arc::new(node(&ca, "tm-consumer"));
            let addr = consumer_node.local_addr().expect("bound");
            let accepting = std::sync::Arc::clone(&consumer_node);
            let accepted = tokio::spawn(async move { accepting.accept().await });
            let to_consumer = producer_node.connect(addr).await.expect("connects");
            let to_producer = accepted
                .await
                .expect("accept task")
                .expect("endpoint open")
                .expect("handshake");
            let id = ChannelId {
                attempt: 0,
                channel: 7,
            };
            let (data_out, credits_in) = to_consumer.open_channel(id).await.expect("opens");
            let (got, credits_out, data_in) = to_producer
                .accept_channel()
                .await
                .expect("accepts")
                .expect("a stream");
            assert_eq!(got, id);

            let (job_manager, failures) = forward::<JobManagerMsg>(16).await;
            let blame = Blame {
                job_manager,
                attempt: 0,
                index: 0,
            };
            let (producer, producer_rx) = forward::<SubtaskMsg>(64).await;
            let (consumer, consumer_rx) = forward::<SubtaskMsg>(64).await;
            let codec = BatchCodec::of::<u64>();
            let sent_bytes = Arc::new(AtomicU64::new(0));

            let (out_stream, stream) = oneshot::channel();
            let (output_proxy, _) = Actor::spawn(
                None,
                OutputProxy,
                OutputProxyArgs {
                    channel: id,
                    codec,
                    stream,
                    blame: blame.clone(),
                    sent_bytes: Arc::clone(&sent_bytes),
                },
            )
            .await
            .expect("spawns");
            out_stream.send(data_out).expect("proxy waiting");
            tokio::spawn(read_credits(credits_in, id, producer, 0, blame.clone()));

            let (in_stream, stream) = oneshot::channel();
            let (input_proxy, _) = Actor::spawn(
                None,
                InputProxy,
                InputProxyArgs {
                    channel: id,
                    stream,
                    blame: blame.clone(),
                },
            )
            .await
            .expect("spawns");
            in_stream.send(credits_out).expect("proxy waiting");
            tokio::spawn(read_batches(data_in, id, codec, consumer, 0, blame));

            let mut ends = Ends {
                outbox: CreditOutbox::new(1),
                gate: InputGate::new(1, CREDITS),
                sent: 0,
                received: 0,
                consumed: 0,
                producer_rx,
                consumer_rx,
                failures,
                output_proxy: output_proxy.clone(),
                input_proxy: input_proxy.clone(),
            };
            // The producer has everything ready; nothing leaves before credit.
            for index in 0..BATCHES {
                ends.outbox.push(0, batch(index));
            }
            assert_eq!(ends.outbox.poll_transmit().map(|(c, _)| c), None);
            let grant = SubtaskMsg::Credit {
                channel: 0,
                credits: ends.gate.initial_credits(),
            };
            input_proxy.send_message(grant).expect("proxy alive");

            // The consumer takes nothing yet: exactly its credits' worth crosses, the rest
            // waits at the producer, and the producer is back-pressured.
            ends.pump(|ends| ends.received == u64::from(CREDITS)).await;
            assert_eq!(ends.sent, u64::from(CREDITS));
            assert!(ends.outbox.is_backpressured());
            assert_eq!(
                ends.outbox.backlogged_batches() as u64,
                BATCHES - u64::from(CREDITS)
            );
            let one_frame = sent_bytes.load(Ordering::Relaxed) / u64::from(CREDITS);
            assert!(one_frame > 0, "the proxy wrote the frames it was given");

            // One batch at a time: each freed credit lets exactly one more batch cross.
            let mut next = 0;
            while ends.consumed < BATCHES {
                let batch = ends.consume_one();
                let batch = batch.downcast::<u64>().expect("a batch of u64");
                let expected: Vec<u64> =
                    (next * RECORDS_PER_BATCH..(next + 1) * RECORDS_PER_BATCH).collect();
                let values: Vec<u64> = batch.records.iter().map(|r| r.value).collect();
                assert_eq!(values, expected, "batch {next} arrives whole and in order");
                next += 1;
                let want = (ends.consumed + u64::from(CREDITS)).min(BATCHES);
                ends.pump(|ends| ends.received == want).await;
                assert_eq!(ends.sent, want, "one credit, one batch");
            }
            assert!(ends.outbox.is_idle());
            output_proxy.stop(None);
            input_proxy.stop(None);
        };
        // Only a guard against hanging: the verdict comes from the events, never the clock.
        tokio::time::timeout(Duration::from_secs(60), test)
            .await
            .expect("the test finished");
    }
}
