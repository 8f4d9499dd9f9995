// The Nexmark queries of `eichhorn_benches::nexmark::queries` (benches/src/nexmark/queries.rs) on
// Flink's DataStream API, over the events of NexmarkGenerator (the same generator, ported).
//
//   Nexmark --query q0|q1|q2|q3|q4|q5|q7|q8|q11 --events N [--parallelism P]
//           [--events-per-s 10000000] [--seed 0] [--state-backend hashmap|rocksdb]
//   RESULT engine=flink job=qN events=.. parallelism=.. state_backend=.. outputs=.. wall_s=..
//          cpu_s=.. events_per_s=.. peak_rss_kb=..

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeHint;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.api.java.tuple.Tuple3;
import org.apache.flink.api.java.tuple.Tuple4;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.co.KeyedCoProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

public final class Nexmark {
    static final long Q5_SIZE_MS = 10_000;
    static final long Q5_SLIDE_MS = 2_000;
    static final long Q7_SIZE_MS = 10_000;
    static final long Q8_SIZE_MS = 10_000;
    static final long Q11_GAP_MS = 10_000;

    public static void main(String[] argv) {
        try {
            run(Common.parseArgs(argv));
        } catch (Throwable error) {
            Common.fail("Nexmark", error);
        }
    }

    static long windowStart(long time, long size) {
        return time - Math.floorMod(time, size);
    }

    static void run(Map<String, String> args) throws Exception {
        String query = args.get("query");
        if (query == null) {
            throw new IllegalArgumentException("--query is required");
        }
        long events = Common.positive(args, "events", null);
        long eventsPerS = Common.positive(args, "events-per-s", "10000000");
        long seed = Long.parseUnsignedLong(args.getOrDefault("seed", "0"));
        NexmarkGenerator generator = new NexmarkGenerator(seed, eventsPerS);
        StreamExecutionEnvironment env = Common.environment(args);
        DataStream<NexmarkEvent> source = env.fromSequence(0, events - 1)
                .map(generator::event)
                .name("nexmark events");
        DataStream<NexmarkEvent> timed = source.assignTimestampsAndWatermarks(
                WatermarkStrategy.<NexmarkEvent>forMonotonousTimestamps()
                        .withTimestampAssigner((event, previous) -> event.dateTime));
        switch (query) {
            case "q0":
                Common.countAndDiscard(bids(source).map(bid -> bid), null);
                break;
            case "q1":
                Common.countAndDiscard(bids(source).map(bid -> {
                    bid.price = bid.price * 908 / 1000;
                    return bid;
                }), null);
                break;
            case "q2":
                Common.countAndDiscard(source
                        .filter(event -> event.kind == NexmarkEvent.BID && event.bid.auction % 123 == 0)
                        .map(event -> Tuple2.of(event.bid.auction, event.bid.price))
                        .returns(Types.TUPLE(Types.LONG, Types.LONG)), null);
                break;
            case "q3":
                Common.countAndDiscard(q3(source), null);
                break;
            case "q4":
                Common.countAndDiscard(q4(timed), null);
                break;
            case "q5":
                Common.countAndDiscard(q5(timed), null);
                break;
            case "q7":
                Common.countAndDiscard(q7(timed), null);
                break;
            case "q8":
                Common.countAndDiscard(q8(timed), null);
                break;
            case "q11":
                Common.countAndDiscard(q11(timed), null);
                break;
            default:
                throw new IllegalArgumentException("unknown query '" + query
                        + "'; expected one of: q0, q1, q2, q3, q4, q5, q7, q8, q11");
        }
        Common.Run run = Common.execute(env, "nexmark " + query);
        System.out.printf("RESULT engine=flink job=%s events=%d parallelism=%d state_backend=%s outputs=%d "
                        + "wall_s=%.6f cpu_s=%.3f events_per_s=%.0f %s%n",
                query, events, env.getParallelism(), args.getOrDefault("state-backend", "hashmap"),
                run.outputs(), run.wallS, run.cpuS, events / run.wallS, Common.peakRssField());
    }

    static DataStream<NexmarkEvent.Bid> bids(DataStream<NexmarkEvent> events) {
        return events.filter(event -> event.kind == NexmarkEvent.BID).map(event -> event.bid);
    }

    // ---- q3: persons in OR, ID or CA joined with the auctions they sell in category 10 ----

    static DataStream<Tuple4<String, String, String, Long>> q3(DataStream<NexmarkEvent> source) {
        DataStream<NexmarkEvent.Person> persons = source
                .filter(event -> event.kind == NexmarkEvent.PERSON
                        && (event.person.state.equals("OR") || event.person.state.equals("ID")
                                || event.person.state.equals("CA")))
                .map(event -> event.person);
        DataStream<NexmarkEvent.Auction> auctions = source
                .filter(event -> event.kind == NexmarkEvent.AUCTION && event.auction.category == 10)
                .map(event -> event.auction);
        return persons.connect(auctions)
                .keyBy(person -> person.id, auction -> auction.seller)
                .process(new LocalItemJoin());
    }

    static final class LocalItemJoin extends KeyedCoProcessFunction<Long, NexmarkEvent.Person,
            NexmarkEvent.Auction, Tuple4<String, String, String, Long>> {
        private transient ValueState<Tuple3<String, String, String>> seller;
        private transient ListState<Long> waiting;

        @Override
        public void open(OpenContext openContext) {
            seller = getRuntimeContext().getState(new ValueStateDescriptor<>("seller",
                    Types.TUPLE(Types.STRING, Types.STRING, Types.STRING)));
            waiting = getRuntimeContext().getListState(new ListStateDescriptor<>("waiting", Types.LONG));
        }

        @Override
        public void processElement1(NexmarkEvent.Person person, Context ctx,
                Collector<Tuple4<String, String, String, Long>> out) throws Exception {
            Iterable<Long> pending = waiting.get();
            if (pending != null) {
                for (Long auction : pending) {
                    out.collect(Tuple4.of(person.name, person.city, person.state, auction));
                }
            }
            waiting.clear();
            seller.update(Tuple3.of(person.name, person.city, person.state));
        }

        @Override
        public void processElement2(NexmarkEvent.Auction auction, Context ctx,
                Collector<Tuple4<String, String, String, Long>> out) throws Exception {
            Tuple3<String, String, String> known = seller.value();
            if (known != null) {
                out.collect(Tuple4.of(known.f0, known.f1, known.f2, auction.id));
            } else {
                waiting.add(auction.id);
            }
        }
    }

    // ---- q4: average closing price per category ----

    /** What q4 keeps of an auction: its span, category, and whether it closed. */
    public static final class AuctionSpan {
        public long dateTime;
        public long expires;
        public long category;
        public boolean closed;

        public AuctionSpan() {}

        boolean admits(long bidTime) {
            return dateTime <= bidTime && bidTime <= expires;
        }
    }

    static final class WinningBids extends KeyedCoProcessFunction<Long, NexmarkEvent.Auction, NexmarkEvent.Bid,
            Tuple2<Long, Long>> {
        private transient ValueState<AuctionSpan> auction;
        private transient ValueState<Long> best;
        private transient ListState<Tuple2<Long, Long>> waiting;

        @Override
        public void open(OpenContext openContext) {
            auction = getRuntimeContext().getState(new ValueStateDescriptor<>("auction", AuctionSpan.class));
            best = getRuntimeContext().getState(new ValueStateDescriptor<>("best", Types.LONG));
            waiting = getRuntimeContext().getListState(
                    new ListStateDescriptor<>("waiting", Types.TUPLE(Types.LONG, Types.LONG)));
        }

        @Override
        public void processElement1(NexmarkEvent.Auction value, Context ctx, Collector<Tuple2<Long, Long>> out)
                throws Exception {
            AuctionSpan span = new AuctionSpan();
            span.dateTime = value.dateTime;
            span.expires = value.expires;
            span.category = value.category;
            Long max = null;
            Iterable<Tuple2<Long, Long>> pending = waiting.get();
            if (pending != null) {
                for (Tuple2<Long, Long> bid : pending) {
                    if (span.admits(bid.f0) && (max == null || bid.f1 > max)) {
                        max = bid.f1;
                    }
                }
            }
            waiting.clear();
            if (max != null) {
                best.update(max);
            }
            auction.update(span);
            ctx.timerService().registerEventTimeTimer(value.expires);
        }

        @Override
        public void processElement2(NexmarkEvent.Bid bid, Context ctx, Collector<Tuple2<Long, Long>> out)
                throws Exception {
            AuctionSpan span = auction.value();
            if (span == null) {
                waiting.add(Tuple2.of(bid.dateTime, bid.price));
            } else if (!span.closed && span.admits(bid.dateTime)) {
                Long current = best.value();
                if (current == null || bid.price > current) {
                    best.update(bid.price);
                }
            }
        }

        @Override
        public void onTimer(long timestamp, OnTimerContext ctx, Collector<Tuple2<Long, Long>> out) throws Exception {
            AuctionSpan span = auction.value();
            if (span == null) {
                return;
            }
            Long price = best.value();
            if (price != null) {
                out.collect(Tuple2.of(span.category, price));
            }
            best.clear();
            span.closed = true;
            auction.update(span);
        }
    }

    static DataStream<Tuple2<Long, Long>> q4(DataStream<NexmarkEvent> timed) {
        DataStream<NexmarkEvent.Auction> auctions = timed
                .filter(event -> event.kind == NexmarkEvent.AUCTION)
                .map(event -> event.auction);
        return auctions.connect(bids(timed))
                .keyBy(auction -> auction.id, bid -> bid.auction)
                .process(new WinningBids())
                .map(pair -> Tuple3.of(pair.f0, pair.f1, 1L))
                .returns(Types.TUPLE(Types.LONG, Types.LONG, Types.LONG))
                .keyBy(triple -> triple.f0)
                .reduce((a, b) -> Tuple3.of(a.f0, a.f1 + b.f1, a.f2 + b.f2))
                .map(triple -> Tuple2.of(triple.f0, triple.f1 / triple.f2))
                .returns(Types.TUPLE(Types.LONG, Types.LONG));
    }

    // ---- q5: hot items ----

    static final class CountBids implements AggregateFunction<NexmarkEvent.Bid, Long, Long> {
        @Override
        public Long createAccumulator() {
            return 0L;
        }

        @Override
        public Long add(NexmarkEvent.Bid bid, Long count) {
            return count + 1;
        }

        @Override
        public Long getResult(Long count) {
            return count;
        }

        @Override
        public Long merge(Long a, Long b) {
            return a + b;
        }
    }

    static final class AuctionWindowCount
            extends ProcessWindowFunction<Long, Tuple3<Long, Long, Long>, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<Long> counts, Collector<Tuple3<Long, Long, Long>> out) {
            for (Long count : counts) {
                out.collect(Tuple3.of(ctx.window().getEnd(), auction, count));
            }
        }
    }

    static final class HottestAuctions extends ProcessWindowFunction<Tuple3<Long, Long, Long>,
            Tuple3<Long, Long, Long>, Long, TimeWindow> {
        @Override
        public void process(Long windowEnd, Context ctx, Iterable<Tuple3<Long, Long, Long>> counts,
                Collector<Tuple3<Long, Long, Long>> out) {
            long most = Long.MIN_VALUE;
            for (Tuple3<Long, Long, Long> item : counts) {
                most = Math.max(most, item.f2);
            }
            for (Tuple3<Long, Long, Long> item : counts) {
                if (item.f2 == most) {
                    out.collect(item);
                }
            }
        }
    }

    static DataStream<Tuple3<Long, Long, Long>> q5(DataStream<NexmarkEvent> timed) {
        return bids(timed)
                .keyBy(bid -> bid.auction)
                .window(SlidingEventTimeWindows.of(Duration.ofMillis(Q5_SIZE_MS), Duration.ofMillis(Q5_SLIDE_MS)))
                .aggregate(new CountBids(), new AuctionWindowCount())
                .keyBy(item -> item.f0)
                .window(TumblingEventTimeWindows.of(Duration.ofMillis(Q5_SLIDE_MS)))
                .process(new HottestAuctions());
    }

    // ---- q7: highest bid ----

    static final class MaxBids
            implements AggregateFunction<NexmarkEvent.Bid, ArrayList<NexmarkEvent.Bid>, List<NexmarkEvent.Bid>> {
        @Override
        public ArrayList<NexmarkEvent.Bid> createAccumulator() {
            return new ArrayList<>();
        }

        @Override
        public ArrayList<NexmarkEvent.Bid> add(NexmarkEvent.Bid bid, ArrayList<NexmarkEvent.Bid> best) {
            if (best.isEmpty() || bid.price > best.get(0).price) {
                best.clear();
                best.add(bid.copy());
            } else if (bid.price == best.get(0).price) {
                best.add(bid.copy());
            }
            return best;
        }

        @Override
        public List<NexmarkEvent.Bid> getResult(ArrayList<NexmarkEvent.Bid> best) {
            return best;
        }

        @Override
        public ArrayList<NexmarkEvent.Bid> merge(ArrayList<NexmarkEvent.Bid> a, ArrayList<NexmarkEvent.Bid> b) {
            for (NexmarkEvent.Bid bid : b) {
                add(bid, a);
            }
            return a;
        }
    }

    static DataStream<Tuple2<Long, NexmarkEvent.Bid>> q7(DataStream<NexmarkEvent> timed) {
        TypeInformation<List<NexmarkEvent.Bid>> listType = Types.LIST(TypeInformation.of(NexmarkEvent.Bid.class));
        return bids(timed)
                .keyBy(bid -> bid.auction)
                .window(TumblingEventTimeWindows.of(Duration.ofMillis(Q7_SIZE_MS)))
                .aggregate(new MaxBids(), TypeInformation.of(new TypeHint<ArrayList<NexmarkEvent.Bid>>() {}), listType)
                .flatMap((List<NexmarkEvent.Bid> best, Collector<NexmarkEvent.Bid> out) -> best.forEach(out::collect))
                .returns(NexmarkEvent.Bid.class)
                .keyBy(bid -> windowStart(bid.dateTime, Q7_SIZE_MS))
                .window(TumblingEventTimeWindows.of(Duration.ofMillis(Q7_SIZE_MS)))
                .aggregate(new MaxBids(), TypeInformation.of(new TypeHint<ArrayList<NexmarkEvent.Bid>>() {}), listType)
                .flatMap((List<NexmarkEvent.Bid> best, Collector<Tuple2<Long, NexmarkEvent.Bid>> out) -> {
                    for (NexmarkEvent.Bid bid : best) {
                        out.collect(Tuple2.of(windowStart(bid.dateTime, Q7_SIZE_MS) + Q7_SIZE_MS, bid));
                    }
                })
                .returns(Types.TUPLE(Types.LONG, TypeInformation.of(NexmarkEvent.Bid.class)));
    }

    // ---- q8: new users (a window join) ----

    static DataStream<Tuple3<Long, String, Long>> q8(DataStream<NexmarkEvent> timed) {
        DataStream<NexmarkEvent.Person> persons = timed
                .filter(event -> event.kind == NexmarkEvent.PERSON)
                .map(event -> event.person);
        DataStream<NexmarkEvent.Auction> auctions = timed
                .filter(event -> event.kind == NexmarkEvent.AUCTION)
                .map(event -> event.auction);
        return persons.coGroup(auctions)
                .where(person -> person.id)
                .equalTo(auction -> auction.seller)
                .window(TumblingEventTimeWindows.of(Duration.ofMillis(Q8_SIZE_MS)))
                .apply((Iterable<NexmarkEvent.Person> people, Iterable<NexmarkEvent.Auction> sold,
                        Collector<Tuple3<Long, String, Long>> out) -> {
                    if (!sold.iterator().hasNext()) {
                        return;
                    }
                    for (NexmarkEvent.Person person : people) {
                        out.collect(Tuple3.of(person.id, person.name, windowStart(person.dateTime, Q8_SIZE_MS)));
                    }
                }, Types.TUPLE(Types.LONG, Types.STRING, Types.LONG));
    }

    // ---- q11: user sessions ----

    static final class SessionBounds
            extends ProcessWindowFunction<Long, Tuple4<Long, Long, Long, Long>, Long, TimeWindow> {
        @Override
        public void process(Long bidder, Context ctx, Iterable<Long> counts,
                Collector<Tuple4<Long, Long, Long, Long>> out) {
            for (Long count : counts) {
                out.collect(Tuple4.of(bidder, count, ctx.window().getStart(), ctx.window().getEnd()));
            }
        }
    }

    static DataStream<Tuple4<Long, Long, Long, Long>> q11(DataStream<NexmarkEvent> timed) {
        return bids(timed)
                .keyBy(bid -> bid.bidder)
                .window(EventTimeSessionWindows.withGap(Duration.ofMillis(Q11_GAP_MS)))
                .aggregate(new CountBids(), new SessionBounds());
    }
}
