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

use crate::exchange::{BatchCodec, ChannelId, ChannelMessage};
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
            ChannelMessage::Data {
                channel: state.args_channel,
                frame: std::mem::take(&mut state.batch),
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
            Ok(Some(frame)) => match ChannelMessage::decode(frame) {
                Ok(ChannelMessage::Credit {
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
        let message = ChannelMessage::Credit {
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
        let batch = match ChannelMessage::decode(frame) {
            Ok(ChannelMessage::Data {
                channel: from,
                frame,
            }) if from == channel => codec.decode(&frame),
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
