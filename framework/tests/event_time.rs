//! Event time end to end: timestamps and watermarks assigned by a strategy travel in-band
//! through channels and reach downstream subtasks in order with the records.

use std::sync::{Arc, Mutex};

use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;

/// What the probe saw of one record: value, timestamp, watermark before it.
type Observation = (i64, Option<i64>, i64);

/// Records what each record looked like when it reached the sink.
#[operator(new = false)]
#[derive(Clone)]
struct WatermarkProbe {
    seen: Arc<Mutex<Vec<Observation>>>,
}

impl SinkFunction<i64> for WatermarkProbe {
    fn invoke(&mut self, value: i64, ctx: &SinkContext) -> Result<(), FunctionError> {
        self.seen
            .lock()
            .unwrap()
            .push((value, ctx.timestamp, ctx.current_watermark));
        Ok(())
    }
}

#[tokio::test]
async fn per_event_watermarks_reach_every_downstream_subtask_in_order() {
    // Out of order on purpose: the watermark only follows the maximum.
    let timestamps: Vec<i64> = vec![10, 30, 20, 50, 40, 45, 80, 70, 100, 90];
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.configure(|c| c.batch_records_max = 3);
        let seen = Arc::new(Mutex::new(Vec::new()));
        env.from_collection(timestamps.clone())
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness_every_event(5)
                    .with_timestamp_assigner(|t: &i64, _| *t),
            )
            .rebalance()
            .add_sink(WatermarkProbe { seen: seen.clone() })
            .set_parallelism(parallelism);
        env.execute("event time").await.unwrap();

        // The assigner emits max_timestamp - 5 - 1 after each record; every sink subtask sees
        // all of them in band, so before record i it has seen the watermark after record i - 1.
        let mut expected_before = std::collections::BTreeMap::new();
        let mut max = i64::MIN;
        for t in &timestamps {
            let before = if max == i64::MIN { i64::MIN } else { max - 6 };
            expected_before.insert(*t, before);
            max = max.max(*t);
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), timestamps.len());
        for (value, timestamp, watermark) in seen {
            assert_eq!(timestamp, Some(value), "parallelism {parallelism}");
            // Watermarks are broadcast in band: the subtask that gets record i has received the
            // watermark that followed record i - 1 on its channel, and none that came later.
            assert_eq!(
                watermark, expected_before[&value],
                "record {value} at parallelism {parallelism}"
            );
        }
    }
}
