//! The Nexmark event generator: persons, auctions and bids, deterministic from a seed.
//!
//! It follows the reference generator (Apache Beam's Nexmark, and the Flink port in the
//! `nexmark/nexmark` repository) in what the queries see; the code is our own.
//!
//! - **Proportions.** Event number `g` is a person if `g % 50 < 1`, an auction if
//!   `g % 50 < 4`, else a bid: persons, auctions and bids come 1:3:46.
//! - **Ids.** Persons and auctions are numbered from 1000 in the order they are generated
//!   ([`last_base0_person_id`], [`last_base0_auction_id`]), so the id of the person or auction
//!   event `g` creates follows from `g` alone, and any subtask can generate any event.
//! - **Skew.** A bid is for a *hot* auction with probability `1 - 1/hot_auction_ratio` (default
//!   1/2): the first auction of the last batch of 100; otherwise for one of the last 100 in-flight
//!   auctions or up to 10 not yet created. Likewise a bidder is hot (the second person of the last
//!   batch of 100) with probability `1 - 1/hot_bidders_ratio` (3/4), and a seller (the first
//!   person of the batch) with `1 - 1/hot_sellers_ratio` (3/4); other people come from the last
//!   1000 active ones or up to 10 not yet created.
//! - **Values.** Prices are `round(10^(6u) * 100)` cents for a uniform `u` in `[0, 1)` (1 to
//!   100,000,000 cents); categories 10..=14; states `AZ CA ID OR WA WY` and the reference's ten
//!   cities, first and last names; item names up to 20 and descriptions up to 100 characters; an
//!   auction runs `1 + uniform(2 * horizon)` ms, where the horizon is the event time until 100
//!   more auctions have been created; the `extra` field pads persons, auctions and bids to 200,
//!   500 and 100 bytes on average (within 20%).
//! - **Channels.** A bid carries a channel and a URL, as in Beam's newer generator: one of four
//!   hot channels (`Google`, `Facebook`, `Baidu`, `Apple`) 99% of the time, else `channel-<n>`
//!   for `n < 10,000`. No query here reads them; they give a bid its realistic size.
//! - **Time.** Event `g` happens at `base_time_ms + floor(g * 1000 / events_per_s)`: event time
//!   advances at a configured rate (the reference's default is 10,000 events per second; Flink's
//!   Nexmark suite runs 10,000,000), so it never decreases along `g`.
//! - **Determinism.** Every event draws its random values from its own small PRNG (splitmix64),
//!   seeded with the seed and `g`, as the reference seeds `java.util.Random` with the event id.
//!   The same seed and configuration give the same events on any parallelism, in any order.
//!
//! # Examples
//!
//! ```
//! use eichhorn_benches::nexmark::{Event, GeneratorConfig, NexmarkGenerator};
//!
//! let generator = NexmarkGenerator::new(GeneratorConfig::default());
//! assert!(matches!(generator.event(0), Event::Person(_)));
//! assert!(matches!(generator.event(1), Event::Auction(_)));
//! assert!(matches!(generator.event(4), Event::Bid(_)));
//! assert_eq!(generator.event(4), generator.event(4));
//! ```

use std::num::NonZeroU64;

use eichhorn::state::splitmix64;
use serde::{Deserialize, Serialize};

/// Persons per epoch of [`TOTAL_PROPORTION`] events.
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions per epoch.
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids per epoch.
pub const BID_PROPORTION: u64 = 46;
/// Events per epoch: every epoch holds its persons first, then its auctions, then its bids.
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// The id of the first person.
pub const FIRST_PERSON_ID: u64 = 1000;
/// The id of the first auction.
pub const FIRST_AUCTION_ID: u64 = 1000;
/// The first category; auctions have `FIRST_CATEGORY_ID .. FIRST_CATEGORY_ID + NUM_CATEGORIES`.
pub const FIRST_CATEGORY_ID: u64 = 10;
/// The number of categories (few, so that small inputs find matches).
pub const NUM_CATEGORIES: u64 = 5;

/// Persons not yet created that auctions and bids may refer to.
const PERSON_ID_LEAD: u64 = 10;
/// Auctions not yet created that bids may refer to.
const AUCTION_ID_LEAD: u64 = 10;
/// Hot auctions, sellers and bidders are the first (second, for bidders) of batches this large.
const HOT_BATCH: u64 = 100;
/// The shortest string [`next_string`] returns before trimming.
const MIN_STRING_LENGTH: u64 = 3;

/// The states a person lives in (few, so that small inputs find matches).
pub const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
/// The channels most bids come from.
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// The other channels are `channel-<n>` for `n < CHANNELS_NUMBER`.
const CHANNELS_NUMBER: u64 = 10_000;

const _: () = assert!(PERSON_PROPORTION > 0 && AUCTION_PROPORTION > 0 && BID_PROPORTION > 0);
// `next_exact_string` takes 13 letters from one `u64`.
const _: () = assert!(26u128.pow(13) <= u64::MAX as u128);

/// A person registers (Nexmark's `Person`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Unique, from [`FIRST_PERSON_ID`] in creation order.
    pub id: u64,
    /// First and last name.
    pub name: String,
    /// A made-up address.
    pub email_address: String,
    /// Four groups of four digits.
    pub credit_card: String,
    /// One of ten cities.
    pub city: String,
    /// One of [`US_STATES`].
    pub state: String,
    /// Event time in milliseconds.
    pub date_time: i64,
    /// Padding to the average person size.
    pub extra: String,
}

/// An auction opens (Nexmark's `Auction`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Unique, from [`FIRST_AUCTION_ID`] in creation order.
    pub id: u64,
    /// Up to 20 characters.
    pub item_name: String,
    /// Up to 100 characters.
    pub description: String,
    /// In cents.
    pub initial_bid: u64,
    /// In cents, above the initial bid.
    pub reserve: u64,
    /// Event time in milliseconds.
    pub date_time: i64,
    /// When the auction closes (event time, milliseconds, after `date_time`).
    pub expires: i64,
    /// The selling person's id.
    pub seller: u64,
    /// One of `FIRST_CATEGORY_ID .. FIRST_CATEGORY_ID + NUM_CATEGORIES`.
    pub category: u64,
    /// Padding to the average auction size.
    pub extra: String,
}

/// A bid on an auction (Nexmark's `Bid`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// The auction's id.
    pub auction: u64,
    /// The bidding person's id.
    pub bidder: u64,
    /// In cents.
    pub price: u64,
    /// Where the bid came from.
    pub channel: String,
    /// The page the bid came from.
    pub url: String,
    /// Event time in milliseconds.
    pub date_time: i64,
    /// Padding to the average bid size.
    pub extra: String,
}

/// One Nexmark event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A new person.
    Person(Person),
    /// A new auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// The event time in milliseconds.
    pub fn date_time(&self) -> i64 {
        match self {
            Self::Person(person) => person.date_time,
            Self::Auction(auction) => auction.date_time,
            Self::Bid(bid) => bid.date_time,
        }
    }

    /// The bid, if this is one.
    pub fn into_bid(self) -> Option<Bid> {
        match self {
            Self::Bid(bid) => Some(bid),
            Self::Person(_) | Self::Auction(_) => None,
        }
    }

    /// The auction, if this is one.
    pub fn into_auction(self) -> Option<Auction> {
        match self {
            Self::Auction(auction) => Some(auction),
            Self::Person(_) | Self::Bid(_) => None,
        }
    }

    /// The person, if this is one.
    pub fn into_person(self) -> Option<Person> {
        match self {
            Self::Person(person) => Some(person),
            Self::Auction(_) | Self::Bid(_) => None,
        }
    }
}

/// What the generator produces; the defaults are the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Seeds every event's random values.
    pub seed: u64,
    /// Events per second of event time.
    pub events_per_s: NonZeroU64,
    /// The event time of event 0, in milliseconds.
    pub base_time_ms: i64,
    /// A bid is for a hot auction with probability `1 - 1/hot_auction_ratio`.
    pub hot_auction_ratio: NonZeroU64,
    /// An auction is by a hot seller with probability `1 - 1/hot_sellers_ratio`.
    pub hot_sellers_ratio: NonZeroU64,
    /// A bid is by a hot bidder with probability `1 - 1/hot_bidders_ratio`.
    pub hot_bidders_ratio: NonZeroU64,
    /// Non-hot bids go to one of this many most recent auctions (or a few not yet created).
    pub num_in_flight_auctions: u64,
    /// Non-hot sellers and bidders are among this many most recent persons (or a few more).
    pub num_active_people: NonZeroU64,
    /// Average person size in bytes (padded with `extra`).
    pub avg_person_byte_size: u64,
    /// Average auction size in bytes.
    pub avg_auction_byte_size: u64,
    /// Average bid size in bytes.
    pub avg_bid_byte_size: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        /// `n` as a `NonZeroU64` (for the positive constants below; 0 would become 1).
        const fn nz(n: u64) -> NonZeroU64 {
            NonZeroU64::MIN.saturating_add(n.saturating_sub(1))
        }
        Self {
            seed: 0,
            events_per_s: nz(10_000),
            // 2023-11-14 22:13:20 UTC: a fixed time in the past, so that runs agree.
            base_time_ms: 1_700_000_000_000,
            hot_auction_ratio: nz(2),
            hot_sellers_ratio: nz(4),
            hot_bidders_ratio: nz(4),
            num_in_flight_auctions: 100,
            num_active_people: nz(1000),
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
        }
    }
}

/// A small seeded PRNG: Vigna's splitmix64 (a counter advanced by the golden gamma, finalised
/// by [`splitmix64`]). Fast, and good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.state)
    }

    /// A number in `0..bound` (0 for a bound of 0), by Lemire's multiply-shift.
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A uniform number in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The kind of event number `g`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A [`Person`].
    Person,
    /// An [`Auction`].
    Auction,
    /// A [`Bid`].
    Bid,
}

impl EventKind {
    /// The kind of event number `g`.
    #[inline]
    pub fn of(g: u64) -> Self {
        let offset = g % TOTAL_PROPORTION;
        if offset < PERSON_PROPORTION {
            Self::Person
        } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
            Self::Auction
        } else {
            Self::Bid
        }
    }
}

/// The base-0 id of the last person created at or before event `g` (the one `g` creates if it
/// is a person). Before the first person exists (never: event 0 is a person) it would be 0.
#[inline]
pub fn last_base0_person_id(g: u64) -> u64 {
    let epoch = g / TOTAL_PROPORTION;
    let offset = g % TOTAL_PROPORTION;
    // An auction or a bid: the last person of this epoch.
    let offset = if offset < PERSON_PROPORTION {
        offset
    } else {
        PERSON_PROPORTION - 1
    };
    epoch * PERSON_PROPORTION + offset
}

/// The base-0 id of the last auction created at or before event `g` (the one `g` creates if it
/// is an auction); 0 before the first auction.
#[inline]
pub fn last_base0_auction_id(g: u64) -> u64 {
    let epoch = g / TOTAL_PROPORTION;
    let offset = g % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // A person: the last auction of the previous epoch.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    } else {
        // A bid: the last auction of this epoch.
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    }
}

/// Generates event `g` for any `g`: a pure function of the configuration and `g`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NexmarkGenerator {
    config: GeneratorConfig,
}

impl NexmarkGenerator {
    /// A generator with `config`.
    pub fn new(config: GeneratorConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// The event time of event `g`: `base_time_ms + floor(g * 1000 / events_per_s)`
    /// (saturating at `i64::MAX`).
    #[inline]
    pub fn timestamp_ms(&self, g: u64) -> i64 {
        let offset = u128::from(g) * 1000 / u128::from(self.config.events_per_s.get());
        i64::try_from(offset)
            .unwrap_or(i64::MAX)
            .saturating_add(self.config.base_time_ms)
    }

    /// Event number `g`.
    pub fn event(&self, g: u64) -> Event {
        let mut rng = SplitMix64::new(splitmix64(self.config.seed ^ splitmix64(g)));
        let timestamp = self.timestamp_ms(g);
        match EventKind::of(g) {
            EventKind::Person => Event::Person(self.person(g, &mut rng, timestamp)),
            EventKind::Auction => Event::Auction(self.auction(g, &mut rng, timestamp)),
            EventKind::Bid => Event::Bid(self.bid(g, &mut rng, timestamp)),
        }
    }

    fn person(&self, g: u64, rng: &mut SplitMix64, timestamp: i64) -> Person {
        let name = format!("{} {}", pick(rng, &FIRST_NAMES), pick(rng, &LAST_NAMES));
        let email_address = format!("{}@{}.com", next_string(rng, 7), next_string(rng, 5));
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        let city = pick(rng, &US_CITIES).to_string();
        let state = pick(rng, &US_STATES).to_string();
        let size =
            8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        let extra = next_extra(rng, size as u64, self.config.avg_person_byte_size);
        Person {
            id: last_base0_person_id(g) + FIRST_PERSON_ID,
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time: timestamp,
            extra,
        }
    }

    /// A person id for an auction's seller or a bid's bidder that is not hot: one of the active
    /// people, or up to [`PERSON_ID_LEAD`] not yet created (base 0).
    fn next_base0_person_id(&self, g: u64, rng: &mut SplitMix64) -> u64 {
        let people = last_base0_person_id(g) + 1;
        let active = people.min(self.config.num_active_people.get());
        people - active + rng.below(active + PERSON_ID_LEAD)
    }

    fn auction(&self, g: u64, rng: &mut SplitMix64, timestamp: i64) -> Auction {
        let seller = if rng.below(self.config.hot_sellers_ratio.get()) > 0 {
            (last_base0_person_id(g) / HOT_BATCH) * HOT_BATCH
        } else {
            self.next_base0_person_id(g, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        let initial_bid = next_price(rng);
        // The auction lasts on average as long as it takes to create `num_in_flight_auctions`
        // more auctions.
        let events_for_auctions =
            self.config.num_in_flight_auctions * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon_ms = self
            .timestamp_ms(g.saturating_add(events_for_auctions))
            .saturating_sub(timestamp);
        let length_ms = 1 + rng.below(horizon_ms.saturating_mul(2).max(1).unsigned_abs());
        let item_name = next_string(rng, 20);
        let description = next_string(rng, 100);
        let reserve = initial_bid + next_price(rng);
        let size = 8 + item_name.len() + description.len() + 8 + 8 + 8 + 8 + 8;
        let extra = next_extra(rng, size as u64, self.config.avg_auction_byte_size);
        Auction {
            id: last_base0_auction_id(g) + FIRST_AUCTION_ID,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: timestamp,
            expires: timestamp.saturating_add_unsigned(length_ms),
            seller: seller + FIRST_PERSON_ID,
            category,
            extra,
        }
    }

    fn bid(&self, g: u64, rng: &mut SplitMix64, timestamp: i64) -> Bid {
        let last_auction = last_base0_auction_id(g);
        let auction = if rng.below(self.config.hot_auction_ratio.get()) > 0 {
            (last_auction / HOT_BATCH) * HOT_BATCH
        } else {
            let first = last_auction.saturating_sub(self.config.num_in_flight_auctions);
            first + rng.below(last_auction - first + 1 + AUCTION_ID_LEAD)
        };
        let bidder = if rng.below(self.config.hot_bidders_ratio.get()) > 0 {
            // The second person of the batch, so that hot bidders are not hot sellers.
            (last_base0_person_id(g) / HOT_BATCH) * HOT_BATCH + 1
        } else {
            self.next_base0_person_id(g, rng)
        };
        let price = next_price(rng);
        let (channel, url) = if rng.below(HOT_BATCH) > 0 {
            let index = rng.below(HOT_CHANNELS.len() as u64);
            let channel = HOT_CHANNELS[index as usize];
            let url = format!(
                "https://www.nexmark.com/{}/item.htm?query=1",
                channel.to_lowercase()
            );
            (channel.to_string(), url)
        } else {
            let n = rng.below(CHANNELS_NUMBER);
            let url = format!(
                "https://www.nexmark.com/{}/{}/{}/item.htm?query=1&channel_id={n}",
                next_string(rng, 5).replace(' ', "_"),
                next_string(rng, 5).replace(' ', "_"),
                next_string(rng, 5).replace(' ', "_"),
            );
            (format!("channel-{n}"), url)
        };
        let extra = next_extra(rng, 8 + 8 + 8 + 8, self.config.avg_bid_byte_size);
        Bid {
            auction: auction + FIRST_AUCTION_ID,
            bidder: bidder + FIRST_PERSON_ID,
            price,
            channel,
            url,
            date_time: timestamp,
            extra,
        }
    }
}

/// One of `choices`, uniformly.
fn pick<'a>(rng: &mut SplitMix64, choices: &[&'a str]) -> &'a str {
    // `below(len)` is below `len`, so the index is in range.
    choices[rng.below(choices.len() as u64) as usize]
}

/// A price in cents: `round(10^(6u) * 100)` for a uniform `u` in `[0, 1)`.
fn next_price(rng: &mut SplitMix64) -> u64 {
    (10f64.powf(rng.next_f64() * 6.0) * 100.0).round() as u64
}

/// A string of `3..max_length` random characters, a space with probability 1/13, else `a-z`,
/// trimmed.
fn next_string(rng: &mut SplitMix64, max_length: u64) -> String {
    let length = MIN_STRING_LENGTH + rng.below(max_length.saturating_sub(MIN_STRING_LENGTH));
    let text: String = (0..length)
        .map(|_| {
            // One draw per character: 26 of the 13 * 26 outcomes are a space.
            let r = rng.below(13 * 26);
            if r < 26 {
                ' '
            } else {
                // `r % 26` is below 26.
                char::from(b'a' + (r % 26) as u8)
            }
        })
        .collect();
    text.trim().to_string()
}

/// A string of exactly `length` characters `a-z`: 13 characters from each 64 random bits
/// (`26^13 < 2^64`), as the reference takes 6 from each 31, since padding is most of what the
/// generator writes.
fn next_exact_string(rng: &mut SplitMix64, length: u64) -> String {
    const CHARS_PER_DRAW: u64 = 13;
    let mut text = String::with_capacity(usize::try_from(length).unwrap_or(0));
    let mut bits = 0;
    for i in 0..length {
        if i % CHARS_PER_DRAW == 0 {
            bits = rng.next_u64();
        }
        // `bits % 26` is below 26.
        text.push(char::from(b'a' + (bits % 26) as u8));
        bits /= 26;
    }
    text
}

/// Padding such that `current_size` plus its length is `average_size` on average (within
/// 20%); empty when `current_size` already exceeds it.
fn next_extra(rng: &mut SplitMix64, current_size: u64, average_size: u64) -> String {
    if current_size > average_size {
        return String::new();
    }
    let wanted = average_size - current_size;
    let delta = (wanted as f64 * 0.2).round() as u64;
    let length = wanted - delta + if delta == 0 { 0 } else { rng.below(2 * delta) };
    next_exact_string(rng, length)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn generate(config: GeneratorConfig, events: u64) -> Vec<Event> {
        let generator = NexmarkGenerator::new(config);
        (0..events).map(|g| generator.event(g)).collect()
    }

    #[test]
    fn kinds_come_in_the_proportions_1_3_46() {
        let events = generate(GeneratorConfig::default(), 50_000);
        let mut counts = [0u64; 3];
        for event in &events {
            counts[match event {
                Event::Person(_) => 0,
                Event::Auction(_) => 1,
                Event::Bid(_) => 2,
            }] += 1;
        }
        assert_eq!(counts, [1_000, 3_000, 46_000]);
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_others() {
        let config = GeneratorConfig::default();
        let a = generate(config, 2_000);
        assert_eq!(a, generate(config, 2_000));
        // Any event on its own, as a parallel subtask generates it.
        let generator = NexmarkGenerator::new(config);
        for g in [0, 1, 7, 1_999] {
            assert_eq!(generator.event(g), a[g as usize], "event {g}");
        }
        let other = generate(GeneratorConfig { seed: 42, ..config }, 2_000);
        let differing = a.iter().zip(&other).filter(|(x, y)| x != y).count();
        assert!(differing > 1_900, "only {differing} events differ");
    }

    #[test]
    fn ids_are_dense_and_in_creation_order() {
        let events = generate(GeneratorConfig::default(), 5_000);
        let persons: Vec<u64> = events
            .iter()
            .filter_map(|e| e.clone().into_person().map(|p| p.id))
            .collect();
        let auctions: Vec<u64> = events
            .iter()
            .filter_map(|e| e.clone().into_auction().map(|a| a.id))
            .collect();
        assert_eq!(persons, (1000..1100).collect::<Vec<_>>());
        assert_eq!(auctions, (1000..1300).collect::<Vec<_>>());
    }

    #[test]
    fn references_point_at_recent_or_soon_created_ids() {
        let events = generate(GeneratorConfig::default(), 20_000);
        for (g, event) in events.iter().enumerate() {
            let g = g as u64;
            let people = last_base0_person_id(g) + 1 + FIRST_PERSON_ID;
            match event {
                Event::Auction(a) => {
                    assert!(a.seller < people + PERSON_ID_LEAD, "event {g}: {a:?}");
                    assert!(a.expires > a.date_time);
                    assert!((10..15).contains(&a.category));
                    assert!(a.reserve > a.initial_bid);
                }
                Event::Bid(b) => {
                    let auctions = last_base0_auction_id(g) + 1 + FIRST_AUCTION_ID;
                    assert!(b.auction < auctions + AUCTION_ID_LEAD, "event {g}: {b:?}");
                    assert!(b.bidder < people + PERSON_ID_LEAD, "event {g}: {b:?}");
                    assert!((1..=100_000_000).contains(&b.price));
                }
                Event::Person(p) => assert!(US_STATES.contains(&p.state.as_str())),
            }
        }
    }

    #[test]
    fn hot_auctions_and_bidders_take_their_share_of_bids() {
        let events = generate(GeneratorConfig::default(), 50_000);
        let bids: Vec<Bid> = events.into_iter().filter_map(Event::into_bid).collect();
        let mut per_auction: BTreeMap<u64, u64> = BTreeMap::new();
        let mut per_bidder: BTreeMap<u64, u64> = BTreeMap::new();
        for bid in &bids {
            *per_auction.entry(bid.auction).or_default() += 1;
            *per_bidder.entry(bid.bidder).or_default() += 1;
        }
        // Hot auctions are multiples of 100 (base 0); they get about half the bids
        // (1 - 1/2, plus the odd random pick), hot bidders about three quarters.
        let hot_auction_bids: u64 = per_auction
            .iter()
            .filter(|(id, _)| (*id - FIRST_AUCTION_ID).is_multiple_of(HOT_BATCH))
            .map(|(_, n)| n)
            .sum();
        let share = hot_auction_bids as f64 / bids.len() as f64;
        assert!((0.48..0.53).contains(&share), "hot auction share {share}");
        let hot_bidder_bids: u64 = per_bidder
            .iter()
            .filter(|(id, _)| (*id - FIRST_PERSON_ID) % HOT_BATCH == 1)
            .map(|(_, n)| n)
            .sum();
        let share = hot_bidder_bids as f64 / bids.len() as f64;
        assert!((0.73..0.78).contains(&share), "hot bidder share {share}");
    }

    #[test]
    fn sizes_and_values_follow_the_reference_ranges() {
        let events = generate(GeneratorConfig::default(), 50_000);
        let (mut bid_bytes, mut bids) = (0usize, 0usize);
        let (mut auction_bytes, mut auctions) = (0usize, 0usize);
        let (mut person_bytes, mut persons) = (0usize, 0usize);
        let mut prices = Vec::new();
        let mut states = BTreeSet::new();
        for event in events {
            match event {
                Event::Bid(b) => {
                    bid_bytes += 32 + b.extra.len();
                    bids += 1;
                    prices.push(b.price);
                }
                Event::Auction(a) => {
                    auction_bytes += 48 + a.item_name.len() + a.description.len() + a.extra.len();
                    auctions += 1;
                    assert!(a.item_name.len() < 20 && a.description.len() < 100);
                }
                Event::Person(p) => {
                    person_bytes += 8
                        + p.name.len()
                        + p.email_address.len()
                        + p.credit_card.len()
                        + p.city.len()
                        + p.state.len()
                        + p.extra.len();
                    persons += 1;
                    assert_eq!(p.credit_card.len(), 19);
                    states.insert(p.state);
                }
            }
        }
        let average = |bytes: usize, n: usize| bytes as f64 / n as f64;
        assert!((99.0..101.0).contains(&average(bid_bytes, bids)));
        assert!((495.0..505.0).contains(&average(auction_bytes, auctions)));
        assert!((196.0..204.0).contains(&average(person_bytes, persons)));
        assert_eq!(states.len(), US_STATES.len());
        // log10(price / 100) is uniform in [0, 6): its median is near 3 (a price of $1000).
        prices.sort_unstable();
        let median = prices[prices.len() / 2];
        assert!((70_000..140_000).contains(&median), "median price {median}");
    }

    #[test]
    fn event_time_advances_at_the_configured_rate() {
        let config = GeneratorConfig {
            events_per_s: NonZeroU64::new(4).expect("non-zero"),
            base_time_ms: 1_000,
            ..GeneratorConfig::default()
        };
        let generator = NexmarkGenerator::new(config);
        let times: Vec<i64> = (0..9).map(|g| generator.event(g).date_time()).collect();
        assert_eq!(
            times,
            [
                1_000, 1_250, 1_500, 1_750, 2_000, 2_250, 2_500, 2_750, 3_000
            ]
        );
    }

    #[test]
    fn last_ids_match_a_count_of_created_entities() {
        let (mut persons, mut auctions) = (0u64, 0u64);
        for g in 0..1_000u64 {
            match EventKind::of(g) {
                EventKind::Person => persons += 1,
                EventKind::Auction => auctions += 1,
                EventKind::Bid => {}
            }
            assert_eq!(last_base0_person_id(g), persons - 1, "event {g}");
            assert_eq!(
                last_base0_auction_id(g),
                auctions.saturating_sub(1),
                "event {g}"
            );
        }
    }

    #[test]
    fn strings_have_the_reference_alphabet_and_lengths() {
        let mut rng = SplitMix64::new(3);
        let (mut spaces, mut chars) = (0usize, 0usize);
        for _ in 0..2_000 {
            let text = next_string(&mut rng, 20);
            assert!(text.len() < 20 && text == text.trim(), "{text:?}");
            assert!(text.chars().all(|c| c == ' ' || c.is_ascii_lowercase()));
            spaces += text.matches(' ').count();
            chars += text.len();
        }
        // Inner spaces only (trimmed): a little under 1/13 of the characters.
        let share = spaces as f64 / chars as f64;
        assert!((0.05..0.08).contains(&share), "space share {share}");
        for length in [0, 1, 12, 13, 14, 100] {
            let text = next_exact_string(&mut rng, length);
            assert_eq!(text.len() as u64, length);
            assert!(text.chars().all(|c| c.is_ascii_lowercase()));
        }
        let long = next_exact_string(&mut rng, 26_000);
        for letter in 'a'..='z' {
            let n = long.matches(letter).count();
            assert!((800..1_200).contains(&n), "{letter}: {n}");
        }
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [false; 13];
        for _ in 0..1_000 {
            let n = rng.below(13);
            seen[n as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.below(0), 0);
        let f = rng.next_f64();
        assert!((0.0..1.0).contains(&f));
    }
}
