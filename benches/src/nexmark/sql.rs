//! The Nexmark queries in SQL, run through `eichhorn-sql` over the same generator as the
//! DataStream versions ([`super::queries`]).
//!
//! The generator's events are split into three tables registered with
//! [`TableEnv::from_data_stream`]: `bid`, `auction` and `person`, with Flink's Nexmark column
//! names; `dateTime` is their event-time attribute (`TIMESTAMP(3)`, timestamps and monotonous
//! watermarks from the events, as in [`super::queries::timestamped_events`]) for the queries
//! that need time, a plain column for those that do not (q0 to q3), so those run without a
//! watermark assigner, as their DataStream versions do.
//!
//! The SQL text is that of Flink's Nexmark suite (`nexmark/nexmark`, `queries/qN.sql`), with
//! these departures, each to give the DataStream versions' results exactly:
//!
//! - q1 converts with integer arithmetic (`908 * price / 1000`, cents rounded down), as
//!   [`super::queries::dollars_to_euros`] does, not `0.908 * price` in `DOUBLE`;
//! - q2 writes `auction % 123 = 0` for `MOD(auction, 123) = 0`;
//! - q3, q4 and q7 write `JOIN .. ON` where Flink lists two tables in `FROM`;
//! - q5 adds the window's end to its result (the DataStream version's first field);
//! - q7 keeps the bids of a window with `window_start <= dateTime < window_end` (the window's
//!   own rows), where Flink's `BETWEEN window_end - 10 s AND window_end` also admits a bid at
//!   exactly `window_end` with the same price; it adds `window_end` to its result;
//! - q11 uses the `SESSION` window TVF for Flink's legacy `GROUP BY SESSION(..)`.

use eichhorn::{DataStream, StreamEnv};
use eichhorn_sql::{Column, DataType, Row, Schema, SqlError, TableEnv, Value};

use super::Query;
use super::generator::{Auction, Bid, Event, GeneratorConfig, Person};
use super::queries::{events_source, timestamped_events};

/// The SQL text of `query`.
pub fn query_sql(query: Query) -> &'static str {
    match query {
        Query::Q0 => "SELECT auction, bidder, price, dateTime, extra FROM bid",
        Query::Q1 => {
            "SELECT auction, bidder, 908 * price / 1000 AS price, dateTime, extra FROM bid"
        }
        Query::Q2 => "SELECT auction, price FROM bid WHERE auction % 123 = 0",
        Query::Q3 => {
            "SELECT P.name, P.city, P.state, A.id
             FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
             WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')"
        }
        Query::Q4 => {
            "SELECT Q.category, AVG(Q.final) AS avg_price
             FROM (
               SELECT MAX(B.price) AS final, A.category
               FROM auction A JOIN bid B ON A.id = B.auction
               WHERE B.dateTime BETWEEN A.dateTime AND A.expires
               GROUP BY A.id, A.category
             ) Q
             GROUP BY Q.category"
        }
        Query::Q5 => {
            "SELECT AuctionBids.endtime, AuctionBids.auction, AuctionBids.num
             FROM (
               SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
               FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
               GROUP BY auction, window_start, window_end
             ) AS AuctionBids
             JOIN (
               SELECT MAX(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
               FROM (
                 SELECT COUNT(*) AS num, window_start AS starttime, window_end AS endtime
                 FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
                 GROUP BY auction, window_start, window_end
               ) AS CountBids
               GROUP BY CountBids.starttime, CountBids.endtime
             ) AS MaxBids
             ON AuctionBids.starttime = MaxBids.starttime
               AND AuctionBids.endtime = MaxBids.endtime
               AND AuctionBids.num >= MaxBids.maxn"
        }
        Query::Q7 => {
            "SELECT B1.window_end, B.auction, B.price, B.bidder, B.dateTime, B.extra
             FROM bid B
             JOIN (
               SELECT MAX(price) AS maxprice, window_start, window_end
               FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
               GROUP BY window_start, window_end
             ) B1 ON B.price = B1.maxprice
             WHERE B.dateTime >= B1.window_start AND B.dateTime < B1.window_end"
        }
        Query::Q8 => {
            "SELECT P.id, P.name, P.starttime
             FROM (
               SELECT id, name, window_start AS starttime, window_end AS endtime
               FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
               GROUP BY id, name, window_start, window_end
             ) P
             JOIN (
               SELECT seller, window_start AS starttime, window_end AS endtime
               FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
               GROUP BY seller, window_start, window_end
             ) A
             ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime"
        }
        Query::Q11 => {
            "SELECT bidder, COUNT(*) AS bid_count, window_start, window_end
             FROM TABLE(SESSION(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
             GROUP BY bidder, window_start, window_end"
        }
    }
}

/// The tables `query` reads.
fn tables_of(query: Query) -> &'static [&'static str] {
    match query {
        Query::Q0 | Query::Q1 | Query::Q2 | Query::Q5 | Query::Q7 | Query::Q11 => &["bid"],
        Query::Q3 => &["auction", "person"],
        Query::Q4 => &["auction", "bid"],
        Query::Q8 => &["auction", "person"],
    }
}

/// Whether `query` needs event time.
fn needs_time(query: Query) -> bool {
    !matches!(query, Query::Q0 | Query::Q1 | Query::Q2 | Query::Q3)
}

fn int(v: u64) -> Value {
    Value::BigInt(v as i64)
}

fn text(s: String) -> Value {
    Value::String(s)
}

fn time_column(name: &str, rowtime: bool) -> Column {
    Column {
        name: name.to_string(),
        data_type: DataType::Timestamp,
        rowtime,
    }
}

/// The `bid` table's schema.
pub fn bid_schema(rowtime: bool) -> Schema {
    Schema::new(vec![
        Column::new("auction", DataType::BigInt),
        Column::new("bidder", DataType::BigInt),
        Column::new("price", DataType::BigInt),
        Column::new("channel", DataType::String),
        Column::new("url", DataType::String),
        time_column("dateTime", rowtime),
        Column::new("extra", DataType::String),
    ])
}

fn bid_row(b: Bid) -> Row {
    vec![
        int(b.auction),
        int(b.bidder),
        int(b.price),
        text(b.channel),
        text(b.url),
        Value::Timestamp(b.date_time),
        text(b.extra),
    ]
}

/// The `auction` table's schema.
pub fn auction_schema(rowtime: bool) -> Schema {
    Schema::new(vec![
        Column::new("id", DataType::BigInt),
        Column::new("itemName", DataType::String),
        Column::new("description", DataType::String),
        Column::new("initialBid", DataType::BigInt),
        Column::new("reserve", DataType::BigInt),
        time_column("dateTime", rowtime),
        time_column("expires", false),
        Column::new("seller", DataType::BigInt),
        Column::new("category", DataType::BigInt),
        Column::new("extra", DataType::String),
    ])
}

fn auction_row(a: Auction) -> Row {
    vec![
        int(a.id),
        text(a.item_name),
        text(a.description),
        int(a.initial_bid),
        int(a.reserve),
        Value::Timestamp(a.date_time),
        Value::Timestamp(a.expires),
        int(a.seller),
        int(a.category),
        text(a.extra),
    ]
}

/// The `person` table's schema.
pub fn person_schema(rowtime: bool) -> Schema {
    Schema::new(vec![
        Column::new("id", DataType::BigInt),
        Column::new("name", DataType::String),
        Column::new("emailAddress", DataType::String),
        Column::new("creditCard", DataType::String),
        Column::new("city", DataType::String),
        Column::new("state", DataType::String),
        time_column("dateTime", rowtime),
        Column::new("extra", DataType::String),
    ])
}

fn person_row(p: Person) -> Row {
    vec![
        int(p.id),
        text(p.name),
        text(p.email_address),
        text(p.credit_card),
        text(p.city),
        text(p.state),
        Value::Timestamp(p.date_time),
        text(p.extra),
    ]
}

/// Registers the tables `query` reads (from `events` generated events) in `tenv` and plans
/// the query: its changelog, added to `env`'s job.
///
/// # Errors
///
/// A planning error (a bug in the query text or the SQL layer).
pub fn build(
    env: &StreamEnv,
    query: Query,
    events: u64,
    config: GeneratorConfig,
) -> Result<DataStream<eichhorn_sql::Change>, SqlError> {
    let mut tenv = TableEnv::new(env);
    let time = needs_time(query);
    let source: DataStream<Event> = if time {
        timestamped_events(env, events, config)
    } else {
        events_source(env, events, config)
    };
    for &table in tables_of(query) {
        match table {
            "bid" => {
                let rows = source
                    .clone()
                    .flat_map(|e: Event| e.into_bid().map(bid_row));
                tenv.from_data_stream("bid", rows, bid_schema(time))?;
            }
            "auction" => {
                let rows = source
                    .clone()
                    .flat_map(|e: Event| e.into_auction().map(auction_row));
                tenv.from_data_stream("auction", rows, auction_schema(time))?;
            }
            _ => {
                let rows = source
                    .clone()
                    .flat_map(|e: Event| e.into_person().map(person_row));
                tenv.from_data_stream("person", rows, person_schema(time))?;
            }
        }
    }
    let table = tenv.sql_query(query_sql(query))?;
    tenv.to_changelog_stream(&table)
}
