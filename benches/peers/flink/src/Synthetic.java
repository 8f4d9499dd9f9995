// The synthetic jobs of `eichhorn_benches` (benches/src/lib.rs) on Flink's DataStream API, with
// the same events: event `g` has `h = splitmix64(g)`, key `h % keys`, event time `g / 100` ms
// and value `h % 10000`.
//
//   Synthetic --job stateless|rolling|tumbling|sliding|session|timers --events N --keys K
//             [--parallelism P] [--state-backend hashmap|rocksdb] [--checkpoint-interval-ms MS]
//   RESULT engine=flink job=.. events=.. keys=.. parallelism=.. state_backend=.. outputs=..
//          count_sum=.. wall_s=.. cpu_s=.. events_per_s=.. peak_rss_kb=..
//
// `outputs` is the number of records that reached the sink, `count_sum` the sum of the window
// counts (window jobs) or 0. The source is `fromSequence(0, events - 1)`: at parallelism 1 the
// events arrive in the order of g, as from Eichhorn's generator.

import java.time.Duration;
import java.util.Map;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.WindowAssigner;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

public final class Synthetic {
    /** One synthetic event (a POJO: public fields and a no-argument constructor). */
    public static final class Event {
        public long key;
        public long timestampMs;
        public long value;

        public Event() {}

        static Event of(long g, long keys) {
            long h = Common.splitmix64(g);
            Event event = new Event();
            event.key = Long.remainderUnsigned(h, keys);
            event.timestampMs = g / 100;
            event.value = Long.remainderUnsigned(h, 10_000);
            return event;
        }
    }

    /** Counts the events of a window, carrying the key along, as `CountAggregate` does. */
    static final class CountAggregate implements AggregateFunction<Event, Tuple2<Long, Long>, Tuple2<Long, Long>> {
        @Override
        public Tuple2<Long, Long> createAccumulator() {
            return Tuple2.of(0L, 0L);
        }

        @Override
        public Tuple2<Long, Long> add(Event event, Tuple2<Long, Long> acc) {
            acc.f0 = event.key;
            acc.f1 = acc.f1 + 1;
            return acc;
        }

        @Override
        public Tuple2<Long, Long> getResult(Tuple2<Long, Long> acc) {
            return acc;
        }

        @Override
        public Tuple2<Long, Long> merge(Tuple2<Long, Long> a, Tuple2<Long, Long> b) {
            return Tuple2.of(a.f1 > 0 ? a.f0 : b.f0, a.f1 + b.f1);
        }
    }

    /** The tumbling job's counts from keyed map state and event-time timers (`TimerCount`). */
    static final class TimerCount extends KeyedProcessFunction<Long, Event, Tuple2<Long, Long>> {
        private transient MapState<Long, Long> counts;

        @Override
        public void open(OpenContext openContext) {
            counts = getRuntimeContext().getMapState(new MapStateDescriptor<>("counts", Types.LONG, Types.LONG));
        }

        @Override
        public void processElement(Event event, Context ctx, Collector<Tuple2<Long, Long>> out) throws Exception {
            long time = ctx.timestamp();
            long end = time - Math.floorMod(time, 1000L) + 1000L - 1;
            Long count = counts.get(end);
            counts.put(end, count == null ? 1L : count + 1);
            ctx.timerService().registerEventTimeTimer(end);
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Tuple2<Long, Long>> out) throws Exception {
            Long count = counts.get(timestamp);
            if (count != null) {
                counts.remove(timestamp);
                out.collect(Tuple2.of(ctx.getCurrentKey(), count));
            }
        }
    }

    public static void main(String[] argv) {
        try {
            run(Common.parseArgs(argv));
        } catch (Throwable error) {
            Common.fail("Synthetic", error);
        }
    }

    static void run(Map<String, String> args) throws Exception {
        String job = args.get("job");
        if (job == null) {
            throw new IllegalArgumentException("--job is required");
        }
        long events = Common.positive(args, "events", null);
        long keys = Common.positive(args, "keys", null);
        StreamExecutionEnvironment env = Common.environment(args);
        DataStream<Event> source = env.fromSequence(0, events - 1)
                .map(g -> Event.of(g, keys))
                .name("events");
        WatermarkStrategy<Event> watermarks = WatermarkStrategy.<Event>forMonotonousTimestamps()
                .withTimestampAssigner((event, previous) -> event.timestampMs);
        switch (job) {
            case "stateless":
                Common.countAndDiscard(source
                        .map(event -> {
                            event.value = event.value * 908 / 1000;
                            return event;
                        })
                        .filter(event -> event.key % 10 != 0), null);
                break;
            case "rolling":
                Common.countAndDiscard(source
                        .map(event -> Tuple2.of(event.key, 1L))
                        .returns(Types.TUPLE(Types.LONG, Types.LONG))
                        .keyBy(pair -> pair.f0)
                        .sum(1), null);
                break;
            case "tumbling":
                windowed(source, watermarks, TumblingEventTimeWindows.of(Duration.ofMillis(1_000)));
                break;
            case "sliding":
                windowed(source, watermarks,
                        SlidingEventTimeWindows.of(Duration.ofMillis(10_000), Duration.ofMillis(1_000)));
                break;
            case "session":
                windowed(source, watermarks, EventTimeSessionWindows.withGap(Duration.ofMillis(100)));
                break;
            case "timers":
                Common.countAndDiscard(source
                        .assignTimestampsAndWatermarks(watermarks)
                        .keyBy(event -> event.key)
                        .process(new TimerCount()), pair -> pair.f1);
                break;
            default:
                throw new IllegalArgumentException("unknown job '" + job
                        + "'; expected one of: stateless, rolling, tumbling, sliding, session, timers");
        }
        Common.Run run = Common.execute(env, "synthetic " + job);
        System.out.printf("RESULT engine=flink job=%s events=%d keys=%d parallelism=%d state_backend=%s "
                        + "outputs=%d count_sum=%d wall_s=%.6f cpu_s=%.3f events_per_s=%.0f %s%n",
                job, events, keys, env.getParallelism(), args.getOrDefault("state-backend", "hashmap"),
                run.outputs(), run.sum(), run.wallS, run.cpuS, events / run.wallS, Common.peakRssField());
    }

    static void windowed(DataStream<Event> source, WatermarkStrategy<Event> watermarks,
            WindowAssigner<Object, TimeWindow> assigner) {
        Common.countAndDiscard(source
                .assignTimestampsAndWatermarks(watermarks)
                .keyBy(event -> event.key)
                .window(assigner)
                .aggregate(new CountAggregate()), pair -> pair.f1);
    }
}
