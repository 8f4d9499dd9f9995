// The CEP benchmark of `benches/src/bin/cep.rs` on Flink CEP (flink-cep, shipped in PyPI's
// apache-flink): event `g` has key `splitmix64(g) % keys`, kind `(splitmix64(g) >>> 32) % 3` and
// event time `g` ms; watermarks trail the newest event by nothing.
//
//   Cep --job followed-by|login --events N --keys K [--within-ms 60000] [--parallelism P]
//       [--state-backend hashmap|rocksdb]
//   RESULT engine=flink job=cep-.. events=.. keys=.. parallelism=.. state_backend=.. matches=..
//          wall_s=.. cpu_s=.. events_per_s=.. peak_rss_kb=..
//
// followed-by: begin(a: kind 0).followedBy(b: kind 1).followedBy(c: kind 2).within(W);
// login: begin(first: kind != 0).next(second: kind != 0).within(W). Flink's default after-match
// skip strategy (no skip), as in Eichhorn.

import java.time.Duration;
import java.util.List;
import java.util.Map;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.cep.CEP;
import org.apache.flink.cep.functions.PatternProcessFunction;
import org.apache.flink.cep.pattern.Pattern;
import org.apache.flink.cep.pattern.conditions.SimpleCondition;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.util.Collector;

public final class Cep {
    /** One CEP event (a POJO). */
    public static final class CepEvent {
        public long key;
        public int kind;
        public long timestamp;

        public CepEvent() {}

        static CepEvent of(long g, long keys) {
            long h = Common.splitmix64(g);
            CepEvent event = new CepEvent();
            event.key = Long.remainderUnsigned(h, keys);
            event.kind = (int) Long.remainderUnsigned(h >>> 32, 3);
            event.timestamp = g;
            return event;
        }
    }

    /** Emits the end timestamp of each match, as Eichhorn's bench selects it. */
    static final class EndTimestamp extends PatternProcessFunction<CepEvent, Long> {
        @Override
        public void processMatch(Map<String, List<CepEvent>> match, Context ctx, Collector<Long> out) {
            long end = Long.MIN_VALUE;
            for (List<CepEvent> events : match.values()) {
                for (CepEvent event : events) {
                    end = Math.max(end, event.timestamp);
                }
            }
            out.collect(end);
        }
    }

    public static void main(String[] argv) {
        try {
            run(Common.parseArgs(argv));
        } catch (Throwable error) {
            Common.fail("Cep", error);
        }
    }

    static void run(Map<String, String> args) throws Exception {
        String job = args.get("job");
        if (job == null) {
            throw new IllegalArgumentException("--job is required");
        }
        long events = Common.positive(args, "events", null);
        long keys = Common.positive(args, "keys", null);
        long within = Common.positive(args, "within-ms", "60000");
        StreamExecutionEnvironment env = Common.environment(args);
        KeyedStream<CepEvent, Long> keyed = env.fromSequence(0, events - 1)
                .map(g -> CepEvent.of(g, keys))
                .assignTimestampsAndWatermarks(WatermarkStrategy.<CepEvent>forBoundedOutOfOrderness(Duration.ZERO)
                        .withTimestampAssigner((event, previous) -> event.timestamp))
                .keyBy(event -> event.key);
        Pattern<CepEvent, CepEvent> pattern;
        switch (job) {
            case "followed-by":
                pattern = Pattern.<CepEvent>begin("a").where(SimpleCondition.of(e -> e.kind == 0))
                        .followedBy("b").where(SimpleCondition.of(e -> e.kind == 1))
                        .followedBy("c").where(SimpleCondition.of(e -> e.kind == 2));
                break;
            case "login":
                pattern = Pattern.<CepEvent>begin("first").where(SimpleCondition.of(e -> e.kind != 0))
                        .next("second").where(SimpleCondition.of(e -> e.kind != 0));
                break;
            default:
                throw new IllegalArgumentException("unknown job '" + job + "'; expected followed-by or login");
        }
        pattern = pattern.within(Duration.ofMillis(within));
        Common.countAndDiscard(CEP.pattern(keyed, pattern).process(new EndTimestamp()), null);
        Common.Run run = Common.execute(env, "cep " + job);
        System.out.printf("RESULT engine=flink job=cep-%s events=%d keys=%d parallelism=%d state_backend=%s "
                        + "matches=%d wall_s=%.6f cpu_s=%.3f events_per_s=%.0f %s%n",
                job, events, keys, env.getParallelism(), args.getOrDefault("state-backend", "hashmap"),
                run.outputs(), run.wallS, run.cpuS, events / run.wallS, Common.peakRssField());
    }
}
