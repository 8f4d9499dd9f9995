// The Nexmark event types as Flink POJOs (public fields, no-argument constructors), the fields of
// `eichhorn_benches::nexmark::generator::{Person, Auction, Bid, Event}`.

public final class NexmarkEvent {
    static final int PERSON = 0;
    static final int AUCTION = 1;
    static final int BID = 2;

    public int kind;
    public long dateTime;
    public Person person;
    public Auction auction;
    public Bid bid;

    public NexmarkEvent() {}

    public static final class Person {
        public long id;
        public String name;
        public String emailAddress;
        public String creditCard;
        public String city;
        public String state;
        public long dateTime;
        public String extra;

        public Person() {}
    }

    public static final class Auction {
        public long id;
        public String itemName;
        public String description;
        public long initialBid;
        public long reserve;
        public long dateTime;
        public long expires;
        public long seller;
        public long category;
        public String extra;

        public Auction() {}
    }

    public static final class Bid {
        public long auction;
        public long bidder;
        public long price;
        public String channel;
        public String url;
        public long dateTime;
        public String extra;

        public Bid() {}

        Bid copy() {
            Bid bid = new Bid();
            bid.auction = auction;
            bid.bidder = bidder;
            bid.price = price;
            bid.channel = channel;
            bid.url = url;
            bid.dateTime = dateTime;
            bid.extra = extra;
            return bid;
        }
    }
}
