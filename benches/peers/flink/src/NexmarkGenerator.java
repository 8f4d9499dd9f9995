// A port of `eichhorn_benches::nexmark::generator` (benches/src/nexmark/generator.rs): the same
// events for the same (seed, events_per_s, g), so both engines run each query over one input.
// Unsigned 64-bit arithmetic is done in longs with the unsigned helpers of `Long`.

import java.io.Serializable;

final class NexmarkGenerator implements Serializable {
    static final long PERSON_PROPORTION = 1;
    static final long AUCTION_PROPORTION = 3;
    static final long BID_PROPORTION = 46;
    static final long TOTAL_PROPORTION = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
    static final long FIRST_PERSON_ID = 1000;
    static final long FIRST_AUCTION_ID = 1000;
    static final long FIRST_CATEGORY_ID = 10;
    static final long NUM_CATEGORIES = 5;
    private static final long PERSON_ID_LEAD = 10;
    private static final long AUCTION_ID_LEAD = 10;
    private static final long HOT_BATCH = 100;
    private static final long MIN_STRING_LENGTH = 3;
    private static final String[] US_STATES = {"AZ", "CA", "ID", "OR", "WA", "WY"};
    private static final String[] US_CITIES = {"Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland",
        "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"};
    private static final String[] FIRST_NAMES = {"Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate",
        "Julie", "Sarah", "Deiter", "Walter"};
    private static final String[] LAST_NAMES = {"Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton",
        "Smith", "Jones", "Noris"};
    private static final String[] HOT_CHANNELS = {"Google", "Facebook", "Baidu", "Apple"};
    private static final long CHANNELS_NUMBER = 10_000;

    // GeneratorConfig::default() apart from the seed and the rate.
    private final long seed;
    private final long eventsPerS;
    private final long baseTimeMs = 1_700_000_000_000L;
    private final long hotAuctionRatio = 2;
    private final long hotSellersRatio = 4;
    private final long hotBiddersRatio = 4;
    private final long numInFlightAuctions = 100;
    private final long numActivePeople = 1000;
    private final long avgPersonByteSize = 200;
    private final long avgAuctionByteSize = 500;
    private final long avgBidByteSize = 100;

    NexmarkGenerator(long seed, long eventsPerS) {
        this.seed = seed;
        this.eventsPerS = eventsPerS;
    }

    /** The generator's random numbers: splitmix64 over a Weyl sequence. */
    static final class Rng {
        private long state;

        Rng(long seed) {
            state = seed;
        }

        long nextU64() {
            state += 0x9e3779b97f4a7c15L;
            return Common.splitmix64(state);
        }

        /** `(next * bound) >> 64` over unsigned 128 bits: uniform in `0..bound`. */
        long below(long bound) {
            long x = nextU64();
            return Math.multiplyHigh(x, bound) + ((x >> 63) & bound) + ((bound >> 63) & x);
        }

        double nextF64() {
            return (nextU64() >>> 11) * (1.0 / (double) (1L << 53));
        }
    }

    static int kind(long g) {
        long offset = g % TOTAL_PROPORTION;
        if (offset < PERSON_PROPORTION) {
            return NexmarkEvent.PERSON;
        } else if (offset < PERSON_PROPORTION + AUCTION_PROPORTION) {
            return NexmarkEvent.AUCTION;
        }
        return NexmarkEvent.BID;
    }

    static long lastBase0PersonId(long g) {
        long epoch = g / TOTAL_PROPORTION;
        long offset = g % TOTAL_PROPORTION;
        if (offset >= PERSON_PROPORTION) {
            offset = PERSON_PROPORTION - 1;
        }
        return epoch * PERSON_PROPORTION + offset;
    }

    static long lastBase0AuctionId(long g) {
        long epoch = g / TOTAL_PROPORTION;
        long offset = g % TOTAL_PROPORTION;
        if (offset < PERSON_PROPORTION) {
            return Math.max(epoch * AUCTION_PROPORTION - 1, 0);
        } else if (offset < PERSON_PROPORTION + AUCTION_PROPORTION) {
            return epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION;
        }
        return epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1;
    }

    long timestampMs(long g) {
        return g * 1000 / eventsPerS + baseTimeMs;
    }

    NexmarkEvent event(long g) {
        Rng rng = new Rng(Common.splitmix64(seed ^ Common.splitmix64(g)));
        long timestamp = timestampMs(g);
        NexmarkEvent event = new NexmarkEvent();
        event.kind = kind(g);
        event.dateTime = timestamp;
        switch (event.kind) {
            case NexmarkEvent.PERSON:
                event.person = person(g, rng, timestamp);
                break;
            case NexmarkEvent.AUCTION:
                event.auction = auction(g, rng, timestamp);
                break;
            default:
                event.bid = bid(g, rng, timestamp);
        }
        return event;
    }

    private static String pad4(long n) {
        String digits = Long.toString(n);
        return "0000".substring(digits.length()) + digits;
    }

    private NexmarkEvent.Person person(long g, Rng rng, long timestamp) {
        NexmarkEvent.Person person = new NexmarkEvent.Person();
        person.name = pick(rng, FIRST_NAMES) + " " + pick(rng, LAST_NAMES);
        String user = nextString(rng, 7);
        person.emailAddress = user + "@" + nextString(rng, 5) + ".com";
        String a = pad4(rng.below(10_000));
        String b = pad4(rng.below(10_000));
        String c = pad4(rng.below(10_000));
        String d = pad4(rng.below(10_000));
        person.creditCard = a + " " + b + " " + c + " " + d;
        person.city = pick(rng, US_CITIES);
        person.state = pick(rng, US_STATES);
        long size = 8 + person.name.length() + person.emailAddress.length() + person.creditCard.length()
                + person.city.length() + person.state.length();
        person.extra = nextExtra(rng, size, avgPersonByteSize);
        person.id = lastBase0PersonId(g) + FIRST_PERSON_ID;
        person.dateTime = timestamp;
        return person;
    }

    private long nextBase0PersonId(long g, Rng rng) {
        long people = lastBase0PersonId(g) + 1;
        long active = Math.min(people, numActivePeople);
        return people - active + rng.below(active + PERSON_ID_LEAD);
    }

    private NexmarkEvent.Auction auction(long g, Rng rng, long timestamp) {
        long seller;
        if (rng.below(hotSellersRatio) > 0) {
            seller = (lastBase0PersonId(g) / HOT_BATCH) * HOT_BATCH;
        } else {
            seller = nextBase0PersonId(g, rng);
        }
        NexmarkEvent.Auction auction = new NexmarkEvent.Auction();
        auction.category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES);
        auction.initialBid = nextPrice(rng);
        long eventsForAuctions = numInFlightAuctions * TOTAL_PROPORTION / AUCTION_PROPORTION;
        long horizonMs = timestampMs(g + eventsForAuctions) - timestamp;
        long lengthMs = 1 + rng.below(Math.max(horizonMs * 2, 1));
        auction.itemName = nextString(rng, 20);
        auction.description = nextString(rng, 100);
        auction.reserve = auction.initialBid + nextPrice(rng);
        long size = 8 + auction.itemName.length() + auction.description.length() + 8 + 8 + 8 + 8 + 8;
        auction.extra = nextExtra(rng, size, avgAuctionByteSize);
        auction.id = lastBase0AuctionId(g) + FIRST_AUCTION_ID;
        auction.dateTime = timestamp;
        auction.expires = timestamp + lengthMs;
        auction.seller = seller + FIRST_PERSON_ID;
        return auction;
    }

    private NexmarkEvent.Bid bid(long g, Rng rng, long timestamp) {
        long lastAuction = lastBase0AuctionId(g);
        long auction;
        if (rng.below(hotAuctionRatio) > 0) {
            auction = (lastAuction / HOT_BATCH) * HOT_BATCH;
        } else {
            long first = Math.max(lastAuction - numInFlightAuctions, 0);
            auction = first + rng.below(lastAuction - first + 1 + AUCTION_ID_LEAD);
        }
        long bidder;
        if (rng.below(hotBiddersRatio) > 0) {
            bidder = (lastBase0PersonId(g) / HOT_BATCH) * HOT_BATCH + 1;
        } else {
            bidder = nextBase0PersonId(g, rng);
        }
        NexmarkEvent.Bid bid = new NexmarkEvent.Bid();
        bid.price = nextPrice(rng);
        if (rng.below(HOT_BATCH) > 0) {
            String channel = HOT_CHANNELS[(int) rng.below(HOT_CHANNELS.length)];
            bid.channel = channel;
            bid.url = "https://www.nexmark.com/" + channel.toLowerCase() + "/item.htm?query=1";
        } else {
            long n = rng.below(CHANNELS_NUMBER);
            String a = nextString(rng, 5).replace(' ', '_');
            String b = nextString(rng, 5).replace(' ', '_');
            String c = nextString(rng, 5).replace(' ', '_');
            bid.url = "https://www.nexmark.com/" + a + "/" + b + "/" + c + "/item.htm?query=1&channel_id=" + n;
            bid.channel = "channel-" + n;
        }
        bid.extra = nextExtra(rng, 8 + 8 + 8 + 8, avgBidByteSize);
        bid.auction = auction + FIRST_AUCTION_ID;
        bid.bidder = bidder + FIRST_PERSON_ID;
        bid.dateTime = timestamp;
        return bid;
    }

    private static String pick(Rng rng, String[] choices) {
        return choices[(int) rng.below(choices.length)];
    }

    private static long nextPrice(Rng rng) {
        // Rust's f64::round rounds half away from zero; the value is positive.
        return (long) Math.floor(Math.pow(10.0, rng.nextF64() * 6.0) * 100.0 + 0.5);
    }

    private static String nextString(Rng rng, long maxLength) {
        long length = MIN_STRING_LENGTH + rng.below(Math.max(maxLength - MIN_STRING_LENGTH, 0));
        char[] text = new char[(int) length];
        for (int i = 0; i < length; i++) {
            long r = rng.below(13 * 26);
            text[i] = r < 26 ? ' ' : (char) ('a' + (r % 26));
        }
        return new String(text).trim();
    }

    private static String nextExactString(Rng rng, long length) {
        char[] text = new char[(int) length];
        long bits = 0;
        for (int i = 0; i < length; i++) {
            if (i % 13 == 0) {
                bits = rng.nextU64();
            }
            text[i] = (char) ('a' + Long.remainderUnsigned(bits, 26));
            bits = Long.divideUnsigned(bits, 26);
        }
        return new String(text);
    }

    private static String nextExtra(Rng rng, long currentSize, long averageSize) {
        if (currentSize > averageSize) {
            return "";
        }
        long wanted = averageSize - currentSize;
        long delta = (long) Math.floor(wanted * 0.2 + 0.5);
        long length = wanted - delta + (delta == 0 ? 0 : rng.below(2 * delta));
        return nextExactString(rng, length);
    }
}
