// The latency benchmark of `benches/src/bin/latency.rs` on Flink: a source paced to `--rate`
// events per second stamps each event with the time it was scheduled for; the sink records how
// long after that (for tumbling windows: after the window's end) each result arrives, in µs.
//
//   Latency --job rolling|tumbling --rate R --seconds S [--keys 10000] [--parallelism 1]
//           [--buffer-timeout-ms N] [--watermark-interval-ms N] [--window-ms 1000]
//           [--warmup-seconds 2]
//   RESULT engine=flink job=latency-.. rate=.. seconds=.. keys=.. parallelism=..
//          buffer_timeout_ms=.. watermark_interval_ms=.. samples=.. p50_us=.. p99_us=.. p999_us=..
//          max_us=.. peak_rss_kb=..
//
// Without the two options the job runs with Flink's defaults (buffer timeout 100 ms, watermarks
// every 200 ms); the low-latency settings are `--buffer-timeout-ms 0 --watermark-interval-ms 1`.
// The schedule starts when the pacing operator opens (the mini cluster is up), so Flink's
// start-up is not counted as latency; results scheduled in the first `--warmup-seconds` are not
// counted. Latency is measured from the scheduled time, not the send time, so a source that falls
// behind shows as latency (no coordinated omission). Everything runs in one JVM, so the
// scheduled and arrival times are read from the same `System.nanoTime` clock.

import java.time.Duration;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.locks.LockSupport;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.accumulators.Histogram;
import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.util.Collector;

public final class Latency {
    /** An event or result with its schedule: `originNs + offsetNs` is when it was due. */
    public static final class Stamped {
        public long key;
        public long count;
        public long originNs;
        public long offsetNs;

        public Stamped() {}
    }

    static Stamped merge(Stamped a, Stamped b) {
        Stamped out = new Stamped();
        out.key = a.key;
        out.count = a.count + b.count;
        out.originNs = a.originNs;
        out.offsetNs = Math.max(a.offsetNs, b.offsetNs);
        return out;
    }

    /** Holds event `g` back until its scheduled time `g / rate` after the operator opened. */
    static final class Pacer extends RichMapFunction<Long, Stamped> {
        private final long rate;
        private final long keys;
        private transient long originNs;

        Pacer(long rate, long keys) {
            this.rate = rate;
            this.keys = keys;
        }

        @Override
        public void open(OpenContext openContext) {
            originNs = System.nanoTime();
        }

        @Override
        public Stamped map(Long g) {
            long offset = (long) ((double) g * 1e9 / rate);
            long due = originNs + offset;
            while (true) {
                long wait = due - System.nanoTime();
                if (wait <= 0) {
                    break;
                }
                LockSupport.parkNanos(wait);
            }
            Stamped event = new Stamped();
            event.key = Long.remainderUnsigned(Common.splitmix64(g), keys);
            event.count = 1;
            event.originNs = originNs;
            event.offsetNs = offset;
            return event;
        }
    }

    /** Records each result's latency in µs into a histogram accumulator. */
    static final class LatencyTail extends RichFlatMapFunction<Stamped, Void> {
        private final long warmupNs;
        private final long windowNs;
        private transient Histogram histogram;

        LatencyTail(long warmupNs, long windowNs) {
            this.warmupNs = warmupNs;
            this.windowNs = windowNs;
        }

        @Override
        public void open(OpenContext openContext) {
            histogram = new Histogram();
            getRuntimeContext().addAccumulator("latency_us", histogram);
        }

        @Override
        public void flatMap(Stamped value, Collector<Void> out) {
            if (value.offsetNs < warmupNs) {
                return;
            }
            long reference = windowNs > 0 ? (value.offsetNs / windowNs + 1) * windowNs : value.offsetNs;
            long micros = Math.max(System.nanoTime() - value.originNs - reference, 0) / 1_000;
            histogram.add((int) Math.min(micros, Integer.MAX_VALUE));
        }
    }

    /** The `q`-quantile by the nearest-rank method, as `eichhorn_benches::latency::quantile`. */
    static long quantile(TreeMap<Integer, Integer> histogram, long samples, double q) {
        long rank = Math.max(1, Math.min(samples, (long) Math.ceil(q * samples)));
        long seen = 0;
        for (Map.Entry<Integer, Integer> entry : histogram.entrySet()) {
            seen += entry.getValue();
            if (seen >= rank) {
                return entry.getKey();
            }
        }
        return 0;
    }

    public static void main(String[] argv) {
        try {
            run(Common.parseArgs(argv));
        } catch (Throwable error) {
            Common.fail("Latency", error);
        }
    }

    static void run(Map<String, String> args) throws Exception {
        String job = args.get("job");
        if (!"rolling".equals(job) && !"tumbling".equals(job)) {
            throw new IllegalArgumentException("--job must be rolling or tumbling, not '" + job + "'");
        }
        long rate = Common.positive(args, "rate", null);
        long seconds = Common.positive(args, "seconds", null);
        long keys = Common.positive(args, "keys", "10000");
        long windowMs = Common.positive(args, "window-ms", "1000");
        long warmupSeconds = Long.parseLong(args.getOrDefault("warmup-seconds", "2"));
        if (warmupSeconds < 0 || warmupSeconds >= seconds) {
            throw new IllegalArgumentException("--warmup-seconds " + warmupSeconds
                    + " leaves nothing of a " + seconds + "-second run to measure");
        }
        StreamExecutionEnvironment env = Common.environment(args);
        if (args.containsKey("watermark-interval-ms")) {
            env.getConfig().setAutoWatermarkInterval(Common.positive(args, "watermark-interval-ms", null));
        }
        long total = rate * seconds;
        DataStream<Stamped> events = env.fromSequence(0, total - 1).map(new Pacer(rate, keys)).name("paced events");
        DataStream<Stamped> results;
        long windowNs = 0;
        if (job.equals("rolling")) {
            results = events.keyBy(e -> e.key).reduce(Latency::merge);
        } else {
            windowNs = windowMs * 1_000_000;
            results = events
                    .assignTimestampsAndWatermarks(WatermarkStrategy.<Stamped>forBoundedOutOfOrderness(Duration.ZERO)
                            .withTimestampAssigner((e, previous) -> e.offsetNs / 1_000_000))
                    .keyBy(e -> e.key)
                    .window(TumblingEventTimeWindows.of(Duration.ofMillis(windowMs)))
                    .reduce(Latency::merge);
        }
        results.flatMap(new LatencyTail(warmupSeconds * 1_000_000_000L, windowNs))
                .sinkTo(new DiscardingSink<>());
        JobExecutionResult result = env.execute("latency " + job);
        TreeMap<Integer, Integer> histogram = result.getAccumulatorResult("latency_us");
        long samples = 0;
        for (int count : histogram.values()) {
            samples += count;
        }
        if (samples == 0) {
            throw new IllegalStateException("no result arrived after the warm-up");
        }
        System.out.printf("RESULT engine=flink job=latency-%s rate=%d seconds=%d keys=%d parallelism=%d "
                        + "buffer_timeout_ms=%s watermark_interval_ms=%s samples=%d p50_us=%d p99_us=%d "
                        + "p999_us=%d max_us=%d %s%n",
                job, rate, seconds, keys, env.getParallelism(), args.getOrDefault("buffer-timeout-ms", "default"),
                args.getOrDefault("watermark-interval-ms", "default"), samples,
                quantile(histogram, samples, 0.5), quantile(histogram, samples, 0.99),
                quantile(histogram, samples, 0.999), histogram.lastKey(), Common.peakRssField());
    }
}
