//! Micro benchmarks of the exchange's hot paths: a batch through the credit-based flow control
//! (sender's [`CreditOutbox`], receiver's [`InputGate`]) and the postcard codec of batches
//! ([`encode_batch`] / [`decode_batch`]), for batches of 1,024 `(u64, u64)` records.
//!
//! `cargo bench -p eichhorn-benches --bench exchange`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_main};
use eichhorn::exchange::{
    ChannelBatch, Control, CreditOutbox, ErasedBatch, InputGate, Record, decode_batch, encode_batch,
};
use eichhorn::time::Watermark;

const RECORDS: usize = 1_024;

fn batch() -> ChannelBatch<(u64, u64)> {
    let mut batch = ChannelBatch::with_capacity(RECORDS);
    for i in 0..RECORDS as u64 {
        batch.records.push(Record::with_timestamp(
            (eichhorn::state::splitmix64(i), i),
            i as i64,
        ));
    }
    batch.push_control(Control::Watermark(Watermark::new(RECORDS as i64)));
    batch
}

fn credit_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("exchange/credit");
    group.throughput(Throughput::Elements(RECORDS as u64));
    // One batch per iteration: queued in the outbox, sent on credit, taken by the gate,
    // consumed, and the credit returned to the outbox.
    group.bench_function("outbox_to_gate_1024", |b| {
        let mut outbox = CreditOutbox::new(4);
        let mut gate = InputGate::new(4, 2);
        for channel in 0..4 {
            outbox.handle_credit(channel, gate.initial_credits());
        }
        let mut channel = 0;
        b.iter_batched(
            || ErasedBatch::new(batch()),
            |erased| {
                outbox.push(channel, erased);
                let (sent_on, sent) = outbox.poll_transmit().expect("a credit is free");
                gate.handle_batch(sent_on, sent);
                let (from, received) = gate.poll_batch().expect("a batch arrived");
                black_box(received.records());
                let credit = gate.consumed(from);
                outbox.handle_credit(from, credit);
                channel = (channel + 1) % 4;
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("exchange/codec");
    group.throughput(Throughput::Elements(RECORDS as u64));
    let batch = batch();
    let mut frame = Vec::new();
    encode_batch(&batch, &mut frame).expect("the batch encodes");
    group.bench_function("encode_1024", |b| {
        let mut out = Vec::with_capacity(frame.len());
        b.iter(|| {
            out.clear();
            encode_batch(black_box(&batch), &mut out).expect("the batch encodes");
            black_box(out.len())
        });
    });
    group.bench_function("decode_1024", |b| {
        b.iter(|| {
            let decoded = decode_batch::<(u64, u64)>(black_box(&frame)).expect("the frame decodes");
            black_box(decoded.records.len())
        });
    });
    group.finish();
}

/// The group lives in a private module: `criterion_group!` defines a public function.
mod group {
    criterion::criterion_group!(benches, super::credit_round_trip, super::codec);
}

criterion_main!(group::benches);
