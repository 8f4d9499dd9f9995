//! An updating pipeline as Nexmark q4 has it (a regular join, `MAX`/`MIN` per joined key, then
//! `AVG` of those per category) against a plain sequential computation at parallelism 1, 2
//! and 4, and the optimized plan `EXPLAIN` shows for it: the `WHERE` inside the inner join's
//! condition, each join input narrowed to the columns read above it, the two calcs between
//! the aggregations merged into one.

use std::collections::BTreeMap;
use std::path::Path;

use eichhorn::StreamEnv;
use eichhorn::state::splitmix64;
use eichhorn_sql::types::materialize;
use eichhorn_sql::{TableEnv, TableResult};

/// An auction: id, category, open from `lo` to `hi` (ms), with a note nobody reads.
struct Auction {
    id: i64,
    category: i64,
    lo: i64,
    hi: i64,
}

/// A bid: auction, price, time (ms).
struct Bid {
    auction: i64,
    price: i64,
    ms: i64,
}

fn data(seed: u64) -> (Vec<Auction>, Vec<Bid>) {
    let r = |i: u64| splitmix64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let auctions: Vec<Auction> = (0..40)
        .map(|i| {
            let x = r(i);
            let lo = (x % 1_000) as i64;
            Auction {
                id: i as i64,
                category: ((x >> 10) % 5) as i64,
                lo,
                hi: lo + ((x >> 20) % 600) as i64,
            }
        })
        .collect();
    let bids = (0..600)
        .map(|i| {
            let x = r(1_000 + i);
            Bid {
                // Some bids name no auction (id 40 and up): they join nothing.
                auction: (x % 44) as i64,
                price: ((x >> 8) % 500) as i64 + 1,
                ms: ((x >> 20) % 1_600) as i64,
            }
        })
        .collect();
    (auctions, bids)
}

fn write(dir: &Path, auctions: &[Auction], bids: &[Bid]) -> String {
    let a_path = dir.join("auctions.csv");
    let b_path = dir.join("bids.csv");
    let a_text: String = auctions
        .iter()
        .map(|a| {
            format!(
                "{},item-{},{},{},{},note\n",
                a.id, a.id, a.category, a.lo, a.hi
            )
        })
        .collect();
    let b_text: String = bids
        .iter()
        .map(|b| format!("{},7,{},{},extra-{}\n", b.auction, b.price, b.ms, b.price))
        .collect();
    std::fs::write(&a_path, a_text).expect("write auctions");
    std::fs::write(&b_path, b_text).expect("write bids");
    format!(
        "CREATE TABLE auctions (id BIGINT, item STRING, category BIGINT, lo BIGINT, hi BIGINT,
           note STRING) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}');
         CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, ms BIGINT,
           extra STRING) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        a_path.display(),
        b_path.display()
    )
}

const QUERY: &str = "SELECT Q.category, AVG(Q.final) AS avg_price, MIN(Q.low) AS low, \
       COUNT(*) AS auctions
     FROM (
       SELECT MAX(B.price) AS final, MIN(B.price) AS low, A.category
       FROM auctions A JOIN bids B ON A.id = B.auction
       WHERE B.ms BETWEEN A.lo AND A.hi
       GROUP BY A.id, A.category
     ) Q
     GROUP BY Q.category";

/// The result computed directly: per category, the average of the auctions' highest bids,
/// the lowest of their lowest bids, and how many auctions had a bid in time.
fn oracle(auctions: &[Auction], bids: &[Bid]) -> Vec<String> {
    let mut per_category: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for a in auctions {
        let prices: Vec<i64> = bids
            .iter()
            .filter(|b| b.auction == a.id && (a.lo..=a.hi).contains(&b.ms))
            .map(|b| b.price)
            .collect();
        if let (Some(max), Some(min)) = (prices.iter().max(), prices.iter().min()) {
            per_category
                .entry(a.category)
                .or_default()
                .push((*max, *min));
        }
    }
    per_category
        .into_iter()
        .map(|(category, finals)| {
            let n = finals.len() as i64;
            let sum: i64 = finals.iter().map(|f| f.0).sum();
            let low = finals.iter().map(|f| f.1).min().expect("non-empty");
            format!("{category},{},{low},{n}", sum / n)
        })
        .collect()
}

async fn run(ddl: &str, parallelism: u32) -> Vec<String> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let mut tenv = TableEnv::new(&env);
    for statement in ddl.split(';') {
        tenv.execute_sql(statement).await.expect("create table");
    }
    let TableResult::Rows { changes, .. } = tenv
        .execute_sql(QUERY)
        .await
        .unwrap_or_else(|e| panic!("at P={parallelism}: {e}"))
    else {
        panic!("not rows");
    };
    let mut lines: Vec<String> = materialize(changes)
        .expect("a consistent changelog")
        .into_iter()
        .flat_map(|(row, n)| {
            let line = row
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            std::iter::repeat_n(line, n as usize)
        })
        .collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn join_then_max_then_avg_matches_the_oracle() {
    let dir = tempfile::tempdir().expect("tempdir");
    for seed in [1, 2] {
        let (auctions, bids) = data(seed);
        let ddl = write(dir.path(), &auctions, &bids);
        let expected = oracle(&auctions, &bids);
        assert!(expected.len() >= 4, "too few categories: {expected:?}");
        for parallelism in [1, 2, 4] {
            assert_eq!(
                run(&ddl, parallelism).await,
                expected,
                "seed {seed} at P={parallelism}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn explain_shows_the_optimized_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (auctions, bids) = data(1);
    let ddl = write(dir.path(), &auctions, &bids);
    let env = StreamEnv::new();
    let mut tenv = TableEnv::new(&env);
    for statement in ddl.split(';') {
        tenv.execute_sql(statement).await.expect("create table");
    }
    let TableResult::Text(plan) = tenv
        .execute_sql(&format!("EXPLAIN {QUERY}"))
        .await
        .expect("explain")
    else {
        panic!("EXPLAIN gives text");
    };
    println!("{plan}");
    // The BETWEEN is part of the join, not a calc above it.
    let lines: Vec<&str> = plan.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("Join("))
        .expect("a join line");
    let join = lines[at];
    assert!(join.contains("where=[..]"), "{plan}");
    assert!(!lines[at - 1].contains("where"), "{plan}");
    // The inputs keep what the join and the aggregation read: no note, item, bidder, extra.
    for unread in ["note", "item", "bidder", "extra"] {
        assert!(!join.contains(unread), "{unread} reaches the join:\n{plan}");
    }
    // One calc between the two aggregations.
    let aggs: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("GroupAggregate"))
        .collect();
    assert_eq!(aggs.len(), 2, "{plan}");
    assert_eq!(
        aggs[1] - aggs[0],
        2,
        "one calc between the aggregations:\n{plan}"
    );
}
