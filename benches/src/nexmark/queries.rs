//! The Nexmark queries as Eichhorn DataStream jobs, each up to (excluding) its sink.
//!
//! The semantics are those of Flink's Nexmark SQL suite (`nexmark/nexmark`), so that the same
//! queries can run on Flink for comparison:
//!
//! - [`q0`] passes every bid through.
//! - [`q1`] converts each bid's price from dollars to euros: `price * 908 / 1000` (integer cents,
//!   rounded down).
//! - [`q2`] keeps `(auction, price)` of the bids on auctions with `auction % 123 == 0`.
//! - [`q3`] joins persons in Oregon, Idaho or California with the auctions they sell in
//!   category 10: `(name, city, state, auction id)`, an unwindowed join keyed by the seller (either
//!   side may come first; both are kept in keyed state).
//! - [`q4`] closes each auction at its expiry with its highest bid placed between its start and
//!   expiry (inclusive), then keeps a running average of those closing prices per category:
//!   `(category, average)` per closed auction, the average in whole cents (rounded down, as SQL's
//!   `AVG` over integers).
//! - [`q5`] counts the bids per auction in 10 s windows sliding every 2 s and emits, per window,
//!   the auctions with the most bids: `(window end, auction, count)`.
//! - [`q7`] emits, per 10 s tumbling window, the bids with the highest price:
//!   `(window end, bid)`.
//! - [`q8`] emits the persons who opened an auction in the same 10 s tumbling window in which
//!   they registered: `(id, name, window start)`, a window join.
//! - [`q11`] counts each bidder's bids per session (a gap of 10 s ends a session):
//!   `(bidder, count, session start, session end)`.
//!
//! The queries with event time take it from the events ([`Event::date_time`]) with monotonous
//! watermarks on the source: each source subtask generates its events in time order.

use eichhorn::operator::window::{TimeDomain, WindowAssigner, WindowContext, WindowError};
use eichhorn::prelude::*;
use serde::{Deserialize, Serialize};

use super::generator::{Auction, Bid, Event, GeneratorConfig, NexmarkGenerator, Person};

/// The window size of q5, in milliseconds.
pub const Q5_SIZE_MS: i64 = 10_000;
/// The slide of q5's windows.
pub const Q5_SLIDE_MS: i64 = 2_000;
/// The tumbling window size of q7.
pub const Q7_SIZE_MS: i64 = 10_000;
/// The tumbling window size of q8.
pub const Q8_SIZE_MS: i64 = 10_000;
/// The session gap of q11.
pub const Q11_GAP_MS: i64 = 10_000;
/// q2 keeps the bids on auctions whose id is a multiple of this.
pub const Q2_AUCTION_MODULUS: u64 = 123;
/// q3's category.
pub const Q3_CATEGORY: u64 = 10;
/// q3's states.
pub const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];

// q5's second stage collects a window's counts in tumbling windows of one slide: every window
// end must be a slide boundary.
const _: () = assert!(Q5_SIZE_MS % Q5_SLIDE_MS == 0);

/// q1's result: a bid with its price in euro cents.
pub type EuroBid = Bid;
/// q2's result: `(auction, price)`.
pub type AuctionPrice = (u64, u64);
/// q3's result: `(name, city, state, auction id)`.
pub type LocalItem = (String, String, String, u64);
/// q4's result: `(category, average closing price)`.
pub type CategoryAverage = (u64, u64);
/// q5's result: `(window end, auction, bids)`.
pub type HotItem = (i64, u64, u64);
/// q7's result: `(window end, bid)`.
pub type HighestBid = (i64, Bid);
/// q8's result: `(person id, name, window start)`.
pub type NewUser = (u64, String, i64);
/// q11's result: `(bidder, bids, session start, session end)`.
pub type UserSession = (u64, u64, i64, i64);

/// All events `0..events` of the generator, split over the environment's parallelism.
pub fn events_source(env: &StreamEnv, events: u64, config: GeneratorConfig) -> DataStream<Event> {
    let generator = NexmarkGenerator::new(config);
    env.from_generator(events, move |g| generator.event(g))
}

/// [`events_source`] with the events' times as timestamps and monotonous watermarks.
pub fn timestamped_events(
    env: &StreamEnv,
    events: u64,
    config: GeneratorConfig,
) -> DataStream<Event> {
    events_source(env, events, config).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_monotonous_timestamps()
            .with_timestamp_assigner(|event: &Event, _| event.date_time()),
    )
}

/// The bids of a stream of events.
fn bids(events: DataStream<Event>) -> DataStream<Bid> {
    events.flat_map(Event::into_bid)
}

/// q0: every bid, unchanged.
pub fn q0(env: &StreamEnv, events: u64, config: GeneratorConfig) -> DataStream<Bid> {
    bids(events_source(env, events, config)).map(|bid: Bid| bid)
}

/// q1's conversion of a price in dollar cents to euro cents.
#[inline]
pub fn dollars_to_euros(price: u64) -> u64 {
    price * 908 / 1000
}

/// q1: every bid with its price in euros.
pub fn q1(env: &StreamEnv, events: u64, config: GeneratorConfig) -> DataStream<EuroBid> {
    bids(events_source(env, events, config)).map(|bid: Bid| Bid {
        price: dollars_to_euros(bid.price),
        ..bid
    })
}

/// q2: `(auction, price)` of the bids on auctions with `auction % 123 == 0`.
pub fn q2(env: &StreamEnv, events: u64, config: GeneratorConfig) -> DataStream<AuctionPrice> {
    events_source(env, events, config).flat_map(|event: Event| match event {
        Event::Bid(bid) if bid.auction.is_multiple_of(Q2_AUCTION_MODULUS) => {
            Some((bid.auction, bid.price))
        }
        _ => None,
    })
}

/// Whether q3 looks at a person's auctions.
#[inline]
pub fn q3_keeps_person(person: &Person) -> bool {
    Q3_STATES.contains(&person.state.as_str())
}

/// Joins a seller (first input) with their auctions (second input): the seller's details stay in
/// keyed state, and auctions that arrive before their seller wait in a list.
#[operator(uid = "nexmark-q3-join")]
#[derive(Debug)]
struct LocalItemJoin {
    /// The seller's `(name, city, state)`, once seen.
    #[state]
    seller: ValueState<(String, String, String)>,
    /// Auctions (ids) seen before their seller.
    #[state]
    waiting: ListState<u64>,
}

impl KeyedCoProcessFunction for LocalItemJoin {
    type Key = u64;
    type In1 = Person;
    type In2 = Auction;
    type Out = LocalItem;

    fn process_element1(
        &mut self,
        person: Person,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, LocalItem>,
    ) {
        for auction in self.waiting.get(ctx) {
            out.collect((
                person.name.clone(),
                person.city.clone(),
                person.state.clone(),
                auction,
            ));
        }
        self.waiting.clear(ctx);
        self.seller
            .update(ctx, (person.name, person.city, person.state));
    }

    fn process_element2(
        &mut self,
        auction: Auction,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, LocalItem>,
    ) {
        match self.seller.value(ctx) {
            Some((name, city, state)) => out.collect((name, city, state, auction.id)),
            None => self.waiting.add(ctx, auction.id),
        }
    }
}

/// q3: `(name, city, state, auction id)` for the auctions in category 10 of sellers in OR, ID
/// or CA.
pub fn q3(env: &StreamEnv, events: u64, config: GeneratorConfig) -> DataStream<LocalItem> {
    let source = events_source(env, events, config);
    let persons = source
        .clone()
        .flat_map(|event: Event| event.into_person().filter(q3_keeps_person));
    let auctions = source.flat_map(|event: Event| {
        event
            .into_auction()
            .filter(|auction| auction.category == Q3_CATEGORY)
    });
    persons
        .connect(auctions)
        .key_by(
            |person: &Person| person.id,
            |auction: &Auction| auction.seller,
        )
        .process(LocalItemJoin::new())
}

/// What q4 keeps of an auction.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AuctionSpan {
    date_time: i64,
    expires: i64,
    category: u64,
    /// Set when the auction closed: later bids cannot win it.
    closed: bool,
}

impl AuctionSpan {
    fn admits(&self, bid_time: i64) -> bool {
        (self.date_time..=self.expires).contains(&bid_time)
    }
}

/// Closes each auction (first input, keyed by id) at its expiry with its highest bid (second
/// input) placed between its start and expiry: emits `(category, price)` when there is one.
/// Bids seen before their auction wait in a list.
#[operator(uid = "nexmark-q4-winning-bids")]
#[derive(Debug)]
struct WinningBids {
    #[state]
    auction: ValueState<AuctionSpan>,
    /// The highest admitted price so far.
    #[state]
    best: ValueState<u64>,
    /// `(time, price)` of bids seen before their auction.
    #[state]
    waiting: ListState<(i64, u64)>,
}

impl KeyedCoProcessFunction for WinningBids {
    type Key = u64;
    type In1 = Auction;
    type In2 = Bid;
    type Out = (u64, u64);

    fn process_element1(
        &mut self,
        auction: Auction,
        ctx: &mut KeyedContext<'_, '_, u64>,
        _out: &mut Collector<'_, (u64, u64)>,
    ) {
        let span = AuctionSpan {
            date_time: auction.date_time,
            expires: auction.expires,
            category: auction.category,
            closed: false,
        };
        let best = self
            .waiting
            .get(ctx)
            .into_iter()
            .filter(|&(time, _)| span.admits(time))
            .map(|(_, price)| price)
            .max();
        self.waiting.clear(ctx);
        if let Some(best) = best {
            self.best.update(ctx, best);
        }
        self.auction.update(ctx, span);
        ctx.register_event_time_timer(auction.expires);
    }

    fn process_element2(
        &mut self,
        bid: Bid,
        ctx: &mut KeyedContext<'_, '_, u64>,
        _out: &mut Collector<'_, (u64, u64)>,
    ) {
        match self.auction.value(ctx) {
            Some(span) if span.closed || !span.admits(bid.date_time) => {}
            Some(_) => {
                if self.best.value(ctx).is_none_or(|best| bid.price > best) {
                    self.best.update(ctx, bid.price);
                }
            }
            None => self.waiting.add(ctx, (bid.date_time, bid.price)),
        }
    }

    fn on_timer(
        &mut self,
        _timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, (u64, u64)>,
    ) {
        let Some(span) = self.auction.value(ctx) else {
            return;
        };
        if let Some(best) = self.best.value(ctx) {
            out.collect((span.category, best));
        }
        self.best.clear(ctx);
        self.auction.update(
            ctx,
            AuctionSpan {
                closed: true,
                ..span
            },
        );
    }
}

/// q4: per closed auction, `(category, average closing price of the category so far)`.
pub fn q4(env: &StreamEnv, events: u64, config: GeneratorConfig) -> DataStream<CategoryAverage> {
    let source = timestamped_events(env, events, config);
    let auctions = source.clone().flat_map(Event::into_auction);
    let bids = bids(source);
    auctions
        .connect(bids)
        .key_by(|auction: &Auction| auction.id, |bid: &Bid| bid.auction)
        .process(WinningBids::new())
        .map(|(category, price): (u64, u64)| (category, price, 1u64))
        .key_by(|&(category, _, _): &(u64, u64, u64)| category)
        .reduce(|a, b| (a.0, a.1 + b.1, a.2 + b.2))
        .map(|(category, sum, count): (u64, u64, u64)| (category, sum / count))
}

/// Counts elements (an [`AggregateFunction`] whose result the window's process function
/// labels).
#[operator(new = false)]
#[derive(Debug, Clone, Copy, Default)]
struct CountBids;

impl AggregateFunction<Bid> for CountBids {
    type Acc = u64;
    type Out = u64;

    fn create_accumulator(&mut self) -> u64 {
        0
    }

    fn add(&mut self, _bid: Bid, count: u64) -> u64 {
        count + 1
    }

    fn get_result(&mut self, count: &u64) -> u64 {
        *count
    }

    fn merge(&mut self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Labels an auction's bid count with the window: `(window end, auction, count)`.
#[operator(new = false)]
#[derive(Debug, Clone, Copy, Default)]
struct AuctionWindowCount;

impl ProcessWindowFunction<u64, u64> for AuctionWindowCount {
    type Out = HotItem;

    fn process(
        &mut self,
        auction: &u64,
        ctx: &WindowContext,
        counts: Vec<u64>,
        out: &mut Collector<'_, HotItem>,
    ) {
        for count in counts {
            out.collect((ctx.window.end, *auction, count));
        }
    }
}

/// Emits the counts of one window (the key: its end) that are the largest.
#[operator(new = false)]
#[derive(Debug, Clone, Copy, Default)]
struct HottestAuctions;

impl ProcessWindowFunction<i64, HotItem> for HottestAuctions {
    type Out = HotItem;

    fn process(
        &mut self,
        _window_end: &i64,
        _ctx: &WindowContext,
        counts: Vec<HotItem>,
        out: &mut Collector<'_, HotItem>,
    ) {
        let most = counts.iter().map(|&(_, _, count)| count).max();
        for item in counts {
            if Some(item.2) == most {
                out.collect(item);
            }
        }
    }
}

/// q5: per 10 s window sliding every 2 s, the auctions with the most bids.
///
/// # Errors
///
/// None in practice: the window parameters are constants a window assigner accepts.
pub fn q5(
    env: &StreamEnv,
    events: u64,
    config: GeneratorConfig,
) -> Result<DataStream<HotItem>, WindowError> {
    let sliding = WindowAssigner::sliding(TimeDomain::EventTime, Q5_SIZE_MS, Q5_SLIDE_MS, 0)?;
    // A window's counts carry its `max_timestamp` (end - 1), so they meet in the slide-long
    // tumbling window that ends with it.
    let per_window = WindowAssigner::tumbling(TimeDomain::EventTime, Q5_SLIDE_MS, 0)?;
    Ok(bids(timestamped_events(env, events, config))
        .key_by(|bid: &Bid| bid.auction)
        .window(sliding)
        .aggregate_with_process(CountBids, AuctionWindowCount)
        .key_by(|&(window_end, _, _): &HotItem| window_end)
        .window(per_window)
        .process(HottestAuctions))
}

/// Keeps the bids with the highest price (all of them on a tie).
#[operator(new = false)]
#[derive(Debug, Clone, Copy, Default)]
struct MaxBids;

impl AggregateFunction<Bid> for MaxBids {
    type Acc = Vec<Bid>;
    type Out = Vec<Bid>;

    fn create_accumulator(&mut self) -> Vec<Bid> {
        Vec::new()
    }

    fn add(&mut self, bid: Bid, mut best: Vec<Bid>) -> Vec<Bid> {
        match best.first().map(|first| first.price) {
            Some(price) if bid.price < price => {}
            Some(price) if bid.price == price => best.push(bid),
            _ => best = vec![bid],
        }
        best
    }

    fn get_result(&mut self, best: &Vec<Bid>) -> Vec<Bid> {
        best.clone()
    }

    fn merge(&mut self, a: Vec<Bid>, b: Vec<Bid>) -> Vec<Bid> {
        b.into_iter().fold(a, |best, bid| self.add(bid, best))
    }
}

/// The start of the tumbling window of `size_ms` (offset 0) holding `time`.
#[inline]
pub fn tumbling_window_start(time: i64, size_ms: i64) -> i64 {
    time - time.rem_euclid(size_ms)
}

/// q7: per 10 s tumbling window, the bids with the highest price, with the window's end.
///
/// The maximum is taken per auction first (in parallel), then per window.
///
/// # Errors
///
/// None in practice: the window size is a constant a window assigner accepts.
pub fn q7(
    env: &StreamEnv,
    events: u64,
    config: GeneratorConfig,
) -> Result<DataStream<HighestBid>, WindowError> {
    let tumbling = WindowAssigner::tumbling(TimeDomain::EventTime, Q7_SIZE_MS, 0)?;
    Ok(bids(timestamped_events(env, events, config))
        .key_by(|bid: &Bid| bid.auction)
        .window(tumbling)
        .aggregate(MaxBids)
        .flat_map(|best: Vec<Bid>| best)
        .key_by(|bid: &Bid| tumbling_window_start(bid.date_time, Q7_SIZE_MS))
        .window(tumbling)
        .aggregate(MaxBids)
        .flat_map(|best: Vec<Bid>| {
            best.into_iter().map(|bid| {
                let end = tumbling_window_start(bid.date_time, Q7_SIZE_MS) + Q7_SIZE_MS;
                (end, bid)
            })
        }))
}

/// q8: the persons who opened an auction in the 10 s tumbling window in which they registered.
///
/// # Errors
///
/// None in practice: the window size is a constant a window assigner accepts.
pub fn q8(
    env: &StreamEnv,
    events: u64,
    config: GeneratorConfig,
) -> Result<DataStream<NewUser>, WindowError> {
    let tumbling = WindowAssigner::tumbling(TimeDomain::EventTime, Q8_SIZE_MS, 0)?;
    let source = timestamped_events(env, events, config);
    let persons = source.clone().flat_map(Event::into_person);
    let auctions = source.flat_map(Event::into_auction);
    Ok(persons
        .join(auctions)
        .window(
            |person: &Person| person.id,
            |auction: &Auction| auction.seller,
            tumbling,
        )
        .co_group(
            |_id: &u64,
             persons: Vec<Person>,
             auctions: Vec<Auction>,
             out: &mut Collector<'_, NewUser>| {
                if auctions.is_empty() {
                    return;
                }
                for person in persons {
                    let start = tumbling_window_start(person.date_time, Q8_SIZE_MS);
                    out.collect((person.id, person.name, start));
                }
            },
        ))
}

/// Labels a bidder's session count with the session's bounds.
#[operator(new = false)]
#[derive(Debug, Clone, Copy, Default)]
struct SessionBounds;

impl ProcessWindowFunction<u64, u64> for SessionBounds {
    type Out = UserSession;

    fn process(
        &mut self,
        bidder: &u64,
        ctx: &WindowContext,
        counts: Vec<u64>,
        out: &mut Collector<'_, UserSession>,
    ) {
        for count in counts {
            out.collect((*bidder, count, ctx.window.start, ctx.window.end));
        }
    }
}

/// q11: the bids of each bidder per session (sessions end after a 10 s gap).
///
/// # Errors
///
/// None in practice: the gap is a constant a window assigner accepts.
pub fn q11(
    env: &StreamEnv,
    events: u64,
    config: GeneratorConfig,
) -> Result<DataStream<UserSession>, WindowError> {
    let sessions = WindowAssigner::session(TimeDomain::EventTime, Q11_GAP_MS)?;
    Ok(bids(timestamped_events(env, events, config))
        .key_by(|bid: &Bid| bid.bidder)
        .window(sessions)
        .aggregate_with_process(CountBids, SessionBounds))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::num::NonZeroU64;

    use super::*;

    /// Events in the tests: enough for many windows, auctions and sessions at the test rate.
    const EVENTS: u64 = 20_000;

    /// 200 events a second: 20,000 events span 100 s of event time (10 tumbling windows,
    /// about 50 sliding ones), and an auction lasts up to about 17 s.
    fn config() -> GeneratorConfig {
        GeneratorConfig {
            events_per_s: NonZeroU64::new(200).expect("non-zero"),
            ..GeneratorConfig::default()
        }
    }

    fn generated(events: u64) -> Vec<Event> {
        let generator = NexmarkGenerator::new(config());
        (0..events).map(|g| generator.event(g)).collect()
    }

    fn generated_bids(events: u64) -> Vec<Bid> {
        generated(events)
            .into_iter()
            .filter_map(Event::into_bid)
            .collect()
    }

    /// How a test runs a query.
    #[derive(Debug, Clone, Copy)]
    struct Run {
        parallelism: u32,
        watermark_interval_ms: u64,
        backend: StateBackendKind,
        /// Checkpoints (kept in memory) every this many milliseconds.
        checkpoint_interval_ms: Option<u64>,
    }

    impl Run {
        /// An environment for this run, its LMDB files under `dir`.
        fn env(self, dir: &std::path::Path) -> StreamEnv {
            let env = StreamEnv::new();
            env.set_parallelism(self.parallelism);
            env.set_state_backend(self.backend);
            env.configure(|c| {
                c.auto_watermark_interval_ms = self.watermark_interval_ms;
                c.local_state_dir = Some(dir.to_path_buf());
            });
            if let Some(interval) = self.checkpoint_interval_ms {
                env.enable_checkpointing(interval);
            }
            env
        }
    }

    impl std::fmt::Display for Run {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "parallelism {}, watermarks every {} ms, {:?} backend, checkpoints {:?} ms",
                self.parallelism,
                self.watermark_interval_ms,
                self.backend,
                self.checkpoint_interval_ms
            )
        }
    }

    /// The runs of every query: parallelism 1, 2 and 4; periodic watermarks (mostly firing at
    /// the end of the input) and watermarks every millisecond (firing windows and timers while
    /// the input runs); keyed state in memory, and in LMDB with checkpoints.
    const RUNS: [Run; 5] = {
        const fn run(parallelism: u32, watermark_interval_ms: u64) -> Run {
            Run {
                parallelism,
                watermark_interval_ms,
                backend: StateBackendKind::Memory,
                checkpoint_interval_ms: None,
            }
        }
        [
            run(1, 200),
            run(2, 1),
            run(2, 200),
            run(4, 1),
            Run {
                backend: StateBackendKind::Lmdb,
                checkpoint_interval_ms: Some(5),
                ..run(2, 1)
            },
        ]
    };

    /// Runs the query `build` makes and returns its results, sorted.
    async fn run<T: Data + Ord>(
        settings: Run,
        build: impl FnOnce(&StreamEnv) -> DataStream<T>,
    ) -> Vec<T> {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = settings.env(dir.path());
        let out = build(&env).collect_sink();
        env.execute("nexmark test").await.expect("job runs");
        let mut results = out.take();
        results.sort();
        results
    }

    fn sorted<T: Ord>(mut values: Vec<T>) -> Vec<T> {
        values.sort();
        values
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q0_passes_every_bid_through() {
        let expected = sorted(generated_bids(EVENTS));
        for settings in RUNS {
            let actual = run(settings, |env| q0(env, EVENTS, config())).await;
            assert_eq!(actual, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q1_converts_every_price() {
        let expected = sorted(
            generated_bids(EVENTS)
                .into_iter()
                .map(|bid| Bid {
                    price: bid.price * 908 / 1000,
                    ..bid
                })
                .collect(),
        );
        for settings in RUNS {
            let actual = run(settings, |env| q1(env, EVENTS, config())).await;
            assert_eq!(actual, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q2_selects_the_auctions() {
        let expected = sorted(
            generated_bids(EVENTS)
                .into_iter()
                .filter(|bid| bid.auction % 123 == 0)
                .map(|bid| (bid.auction, bid.price))
                .collect::<Vec<_>>(),
        );
        assert!(!expected.is_empty(), "the input selects some bids");
        for settings in RUNS {
            let actual = run(settings, |env| q2(env, EVENTS, config())).await;
            assert_eq!(actual, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q3_joins_local_sellers_with_their_auctions() {
        let events = generated(EVENTS);
        let sellers: BTreeMap<u64, Person> = events
            .iter()
            .filter_map(|e| e.clone().into_person())
            .filter(|p| ["OR", "ID", "CA"].contains(&p.state.as_str()))
            .map(|p| (p.id, p))
            .collect();
        let expected: Vec<LocalItem> = sorted(
            events
                .iter()
                .filter_map(|e| e.clone().into_auction())
                .filter(|a| a.category == 10)
                .filter_map(|a| {
                    let p = sellers.get(&a.seller)?;
                    Some((p.name.clone(), p.city.clone(), p.state.clone(), a.id))
                })
                .collect(),
        );
        assert!(expected.len() > 20, "only {} matches", expected.len());
        for settings in RUNS {
            let actual = run(settings, |env| q3(env, EVENTS, config())).await;
            assert_eq!(actual, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q4_averages_the_closing_prices_per_category() {
        let events = generated(EVENTS);
        let bids: Vec<Bid> = events.iter().filter_map(|e| e.clone().into_bid()).collect();
        // Per category: the sum and number of the auctions' highest admitted bids.
        let mut totals: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for auction in events.iter().filter_map(|e| e.clone().into_auction()) {
            let best = bids
                .iter()
                .filter(|b| b.auction == auction.id)
                .filter(|b| auction.date_time <= b.date_time && b.date_time <= auction.expires)
                .map(|b| b.price)
                .max();
            if let Some(best) = best {
                let total = totals.entry(auction.category).or_default();
                total.0 += best;
                total.1 += 1;
            }
        }
        let closed: u64 = totals.values().map(|&(_, n)| n).sum();
        assert!(closed > 100, "only {closed} auctions closed with a bid");
        for settings in RUNS {
            let dir = tempfile::tempdir().expect("temp dir");
            let env = settings.env(dir.path());
            let out = q4(&env, EVENTS, config()).collect_sink();
            env.execute("nexmark q4 test").await.expect("job runs");
            let outputs = out.take();
            // One output per closed auction; per category the outputs arrive in order (one
            // subtask owns a category), so the last one is the final average.
            assert_eq!(outputs.len() as u64, closed, "{settings}");
            let mut last: BTreeMap<u64, u64> = BTreeMap::new();
            for (category, average) in outputs {
                last.insert(category, average);
            }
            let expected: BTreeMap<u64, u64> = totals
                .iter()
                .map(|(&category, &(sum, n))| (category, sum / n))
                .collect();
            assert_eq!(last, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q5_finds_the_hottest_auctions_per_sliding_window() {
        let mut counts: BTreeMap<i64, BTreeMap<u64, u64>> = BTreeMap::new();
        for bid in generated_bids(EVENTS) {
            let mut start = tumbling_window_start(bid.date_time, Q5_SLIDE_MS);
            while start > bid.date_time - Q5_SIZE_MS {
                *counts
                    .entry(start + Q5_SIZE_MS)
                    .or_default()
                    .entry(bid.auction)
                    .or_default() += 1;
                start -= Q5_SLIDE_MS;
            }
        }
        let mut expected = Vec::new();
        for (end, per_auction) in &counts {
            let most = per_auction.values().max().copied().unwrap_or(0);
            for (&auction, &count) in per_auction {
                if count == most {
                    expected.push((*end, auction, count));
                }
            }
        }
        let expected = sorted(expected);
        assert!(counts.len() > 40, "only {} windows", counts.len());
        for settings in RUNS {
            let actual = run(settings, |env| {
                q5(env, EVENTS, config()).expect("valid windows")
            })
            .await;
            assert_eq!(actual, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q7_finds_the_highest_bids_per_window() {
        let mut windows: BTreeMap<i64, Vec<Bid>> = BTreeMap::new();
        for bid in generated_bids(EVENTS) {
            let end = tumbling_window_start(bid.date_time, Q7_SIZE_MS) + Q7_SIZE_MS;
            windows.entry(end).or_default().push(bid);
        }
        let mut expected = Vec::new();
        for (end, bids) in windows {
            let highest = bids.iter().map(|b| b.price).max().unwrap_or(0);
            expected.extend(
                bids.into_iter()
                    .filter(|b| b.price == highest)
                    .map(|b| (end, b)),
            );
        }
        let expected = sorted(expected);
        assert!(expected.len() >= 10, "{} results", expected.len());
        for settings in RUNS {
            let actual = run(settings, |env| {
                q7(env, EVENTS, config()).expect("valid windows")
            })
            .await;
            assert_eq!(actual, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q8_finds_persons_who_sell_in_the_window_they_registered() {
        let events = generated(EVENTS);
        let window = |time: i64| tumbling_window_start(time, Q8_SIZE_MS);
        let sold: BTreeSet<(u64, i64)> = events
            .iter()
            .filter_map(|e| e.clone().into_auction())
            .map(|a| (a.seller, window(a.date_time)))
            .collect();
        let expected: Vec<NewUser> = sorted(
            events
                .iter()
                .filter_map(|e| e.clone().into_person())
                .filter(|p| sold.contains(&(p.id, window(p.date_time))))
                .map(|p| (p.id, p.name, window(p.date_time)))
                .collect(),
        );
        assert!(expected.len() > 10, "only {} new users", expected.len());
        for settings in RUNS {
            let actual = run(settings, |env| {
                q8(env, EVENTS, config()).expect("valid windows")
            })
            .await;
            assert_eq!(actual, expected, "{settings}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn q11_counts_bids_per_bidder_session() {
        let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
        for bid in generated_bids(EVENTS) {
            times.entry(bid.bidder).or_default().push(bid.date_time);
        }
        for settings in RUNS {
            let sessions = run(settings, |env| {
                q11(env, EVENTS, config()).expect("valid windows")
            })
            .await;
            let context = settings.to_string();
            let mut per_bidder: BTreeMap<u64, Vec<(i64, i64, u64)>> = BTreeMap::new();
            for (bidder, count, start, end) in sessions {
                per_bidder
                    .entry(bidder)
                    .or_default()
                    .push((start, end, count));
            }
            for bidder_sessions in per_bidder.values_mut() {
                bidder_sessions.sort_unstable();
            }
            let session_count: usize = per_bidder.values().map(Vec::len).sum();
            assert!(
                session_count > 2 * per_bidder.len(),
                "{context}: few sessions"
            );
            assert_eq!(
                per_bidder.keys().collect::<Vec<_>>(),
                times.keys().collect::<Vec<_>>(),
                "{context}"
            );
            // Per bidder the sessions, in time order, cut the bids into runs whose neighbours
            // are at most a gap apart, with at least a gap between runs (exactly a gap only if
            // a watermark closed the first session in between); a session runs from its first
            // bid to a gap after its last.
            for (bidder, bidder_times) in &times {
                let mut next = 0;
                for &(start, end, count) in &per_bidder[bidder] {
                    let count = usize::try_from(count).expect("small count");
                    let run = &bidder_times[next..next + count];
                    let label = format!("{context}, bidder {bidder}");
                    assert!(run.windows(2).all(|w| w[1] - w[0] <= Q11_GAP_MS), "{label}");
                    assert_eq!(
                        (start, end),
                        (run[0], run[count - 1] + Q11_GAP_MS),
                        "{label}"
                    );
                    if next > 0 {
                        assert!(run[0] - bidder_times[next - 1] >= Q11_GAP_MS, "{label}");
                    }
                    next += count;
                }
                assert_eq!(next, bidder_times.len(), "{context}, bidder {bidder}");
            }
        }
    }
}
