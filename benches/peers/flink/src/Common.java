// Shared pieces of the Flink peer jobs: the splitmix64 finalizer (the same bits as
// `eichhorn::state::splitmix64`), the engine configuration every job uses, the counting tail
// that ends each job, and the RESULT line with the process's peak RSS and CPU time.

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.accumulators.LongMaximum;
import org.apache.flink.api.common.accumulators.LongMinimum;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.PipelineOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;

final class Common {
    private Common() {}

    /** The accumulator with the number of records that reached the end of the job. */
    static final String OUTPUTS = "outputs";
    /** The accumulator with the sum of a per-record figure (window counts), for the check. */
    static final String SUM = "sum";
    private static final String START_NS = "start_ns";
    private static final String END_NS = "end_ns";
    private static final String START_CPU_NS = "start_cpu_ns";
    private static final String END_CPU_NS = "end_cpu_ns";

    /** The CPU time of this process (every thread) in ns. */
    static long processCpuNs() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    /** The splitmix64 finalizer on the 64 bits of `g` (unsigned arithmetic in a long). */
    static long splitmix64(long g) {
        long z = g;
        z ^= z >>> 30;
        z *= 0xbf58476d1ce4e5b9L;
        z ^= z >>> 27;
        z *= 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    /** Parses `--name value` pairs; a flag without a value is an error naming it. */
    static Map<String, String> parseArgs(String[] args) {
        Map<String, String> map = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String name = args[i];
            if (!name.startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument '" + name + "' (want --name value)");
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("argument '" + name + "' has no value");
            }
            map.put(name.substring(2), args[++i]);
        }
        return map;
    }

    static long positive(Map<String, String> args, String name, String fallback) {
        String text = args.getOrDefault(name, fallback);
        if (text == null) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        long value;
        try {
            value = Long.parseLong(text);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": '" + text + "' is not an integer");
        }
        if (value < 1) {
            throw new IllegalArgumentException("--" + name + " must be at least 1, not " + value);
        }
        return value;
    }

    /**
     * The environment of a local mini cluster in Flink's best configuration for these jobs:
     * object reuse on, the heap (hashmap) state backend or RocksDB, no checkpoints unless asked.
     */
    static StreamExecutionEnvironment environment(Map<String, String> args) {
        Configuration conf = new Configuration();
        conf.set(PipelineOptions.OBJECT_REUSE, true);
        String backend = args.getOrDefault("state-backend", "hashmap");
        if (!backend.equals("hashmap") && !backend.equals("rocksdb")) {
            throw new IllegalArgumentException("--state-backend: '" + backend + "' is not hashmap or rocksdb");
        }
        conf.set(StateBackendOptions.STATE_BACKEND, backend);
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism((int) positive(args, "parallelism", "1"));
        if (args.containsKey("buffer-timeout-ms")) {
            env.setBufferTimeout(Long.parseLong(args.get("buffer-timeout-ms")));
        }
        if (args.containsKey("checkpoint-interval-ms")) {
            env.enableCheckpointing(positive(args, "checkpoint-interval-ms", null));
        }
        return env;
    }

    /** Counts the records (and, with `sum`, adds up a figure of each) and discards them. */
    static final class CountingTail<T> extends RichFlatMapFunction<T, Void> {
        private final SerializableToLong<T> sum;
        private transient LongCounter outputs;
        private transient LongCounter total;
        private transient LongMaximum endNs;
        private transient LongMaximum endCpuNs;

        CountingTail(SerializableToLong<T> sum) {
            this.sum = sum;
        }

        @Override
        public void open(OpenContext openContext) {
            outputs = new LongCounter();
            total = new LongCounter();
            getRuntimeContext().addAccumulator(OUTPUTS, outputs);
            getRuntimeContext().addAccumulator(SUM, total);
            LongMinimum startNs = new LongMinimum();
            startNs.add(System.nanoTime());
            LongMinimum startCpuNs = new LongMinimum();
            startCpuNs.add(processCpuNs());
            getRuntimeContext().addAccumulator(START_NS, startNs);
            getRuntimeContext().addAccumulator(START_CPU_NS, startCpuNs);
            endNs = new LongMaximum();
            endCpuNs = new LongMaximum();
            getRuntimeContext().addAccumulator(END_NS, endNs);
            getRuntimeContext().addAccumulator(END_CPU_NS, endCpuNs);
        }

        @Override
        public void close() {
            endNs.add(System.nanoTime());
            endCpuNs.add(processCpuNs());
        }

        @Override
        public void flatMap(T value, Collector<Void> out) {
            outputs.add(1L);
            if (sum != null) {
                total.add(sum.applyAsLong(value));
            }
        }
    }

    /** A serialisable `T -> long`. */
    interface SerializableToLong<T> extends java.io.Serializable {
        long applyAsLong(T value);
    }

    /** Ends `stream` in the counting tail and a discarding sink. */
    static <T> void countAndDiscard(DataStream<T> stream, SerializableToLong<T> sum) {
        stream.flatMap(new CountingTail<T>(sum)).name("count").sinkTo(new DiscardingSink<>()).name("Sink: Discard");
    }

    /** The outcome of a timed run. */
    static final class Run {
        final JobExecutionResult result;
        final double wallS;
        final double cpuS;

        Run(JobExecutionResult result, double wallS, double cpuS) {
            this.result = result;
            this.wallS = wallS;
            this.cpuS = cpuS;
        }

        long outputs() {
            Long value = result.getAccumulatorResult(OUTPUTS);
            return value == null ? 0 : value;
        }

        long sum() {
            Long value = result.getAccumulatorResult(SUM);
            return value == null ? 0 : value;
        }
    }

    /**
     * Runs the job and times it from the moment the counting tail opened (the job's tasks are
     * deployed, the mini cluster is up) to the moment it closed (the input is exhausted): wall
     * time and the process's CPU time over that span, so the mini cluster's start-up and
     * shut-down are outside, as Eichhorn's figures exclude process start-up.
     */
    static Run execute(StreamExecutionEnvironment env, String name) throws Exception {
        JobExecutionResult result = env.execute(name);
        long start = result.<Long>getAccumulatorResult(START_NS);
        long end = result.<Long>getAccumulatorResult(END_NS);
        long startCpu = result.<Long>getAccumulatorResult(START_CPU_NS);
        long endCpu = result.<Long>getAccumulatorResult(END_CPU_NS);
        return new Run(result, (end - start) / 1e9, (endCpu - startCpu) / 1e9);
    }

    /** `peak_rss_kb=N` from `VmHWM` in /proc/self/status, or `unknown`. */
    static String peakRssField() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    String[] parts = line.substring(6).trim().split("\\s+");
                    return "peak_rss_kb=" + parts[0];
                }
            }
            System.err.println("no VmHWM line in /proc/self/status");
        } catch (IOException e) {
            System.err.println("cannot read /proc/self/status: " + e);
        }
        return "peak_rss_kb=unknown";
    }

    /** Prints the error and exits non-zero. */
    static void fail(String program, Throwable error) {
        System.err.println(program + ": error: " + error);
        System.exit(1);
    }
}
