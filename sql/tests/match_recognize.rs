//! `MATCH_RECOGNIZE` against a brute-force sequential matcher, at parallelism 1, 2 and 4, and
//! across a failure restored from a checkpoint.
//!
//! The oracle enumerates, per partition, every assignment of consecutive rows to the pattern's
//! variables that satisfies the quantifiers, the `DEFINE` conditions (written here in plain
//! Rust, evaluated with the rows assigned before), greediness (a greedy loop may not be left
//! while its condition holds for the next row) and `WITHIN`; it reports them in the order
//! their last row arrives (then by first row) and applies the `AFTER MATCH SKIP` strategy
//! after each, as CEP's definition states. The `MEASURES` are computed in Rust as well.
//!
//! The first test is the V-shape example of Flink's `MATCH_RECOGNIZE` documentation, with its
//! documented answer.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eichhorn::StreamEnv;
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::state::{StateBackendKind, splitmix64};
use eichhorn::time::WatermarkStrategy;
use eichhorn_sql::types::{format_timestamp, materialize};
use eichhorn_sql::{Change, Column, DataType, Row, Schema, TableEnv, TableResult, Value};

/// A ticker row: symbol, price, event time (ms).
#[derive(Debug, Clone)]
struct Tick {
    symbol: &'static str,
    price: i64,
    ms: i64,
}

const SYMBOLS: [&str; 3] = ["ACME", "BETA", "CORP"];

fn ticks(count: u64, seed: u64) -> Vec<Tick> {
    (0..count)
        .map(|i| {
            let r = splitmix64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            Tick {
                symbol: SYMBOLS[(r % 3) as usize],
                price: ((r >> 8) % 30) as i64 + 1,
                ms: i as i64 * 250,
            }
        })
        .collect()
}

fn ddl(path: &Path) -> String {
    format!(
        "CREATE TABLE ticker (
           symbol STRING,
           price BIGINT,
           ms BIGINT,
           ts AS TO_TIMESTAMP_LTZ(ms, 3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        path.display()
    )
}

fn write_csv(path: &Path, ticks: &[Tick]) {
    let text: String = ticks
        .iter()
        .map(|t| format!("{},{},{}\n", t.symbol, t.price, t.ms))
        .collect();
    std::fs::write(path, text).expect("write csv");
}

/// Runs `query` at `parallelism`: the header, then the rows sorted.
async fn run(path: &Path, query: &str, parallelism: u32) -> Vec<String> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let mut tenv = TableEnv::new(&env);
    tenv.execute_sql(&ddl(path)).await.expect("create table");
    // Views first (`;;` separates statements), then the query.
    let mut statements: Vec<&str> = query.split(";;").collect();
    let query = statements.pop().expect("a query");
    for view in statements {
        tenv.execute_sql(view).await.expect("create view");
    }
    let result = tenv
        .execute_sql(query)
        .await
        .unwrap_or_else(|e| panic!("{query} at P={parallelism}: {e}"));
    let TableResult::Rows {
        schema, changes, ..
    } = result
    else {
        panic!("{query}: not rows");
    };
    assert!(
        changes
            .iter()
            .all(|c| c.kind == eichhorn_sql::RowKind::Insert),
        "{query}: MATCH_RECOGNIZE only appends"
    );
    let table = materialize(changes).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut lines = vec![schema.names().join(",")];
    for (row, count) in table {
        let line = row
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        lines.extend(std::iter::repeat_n(line, count as usize));
    }
    lines[1..].sort();
    lines
}

async fn check(path: &Path, query: &str, header: &str, mut expected: Vec<String>) {
    expected.sort();
    assert!(!expected.is_empty(), "{query}: the oracle expects no rows");
    for parallelism in [1, 2, 4] {
        let lines = run(path, query, parallelism).await;
        assert_eq!(lines[0], header, "{query} at P={parallelism}");
        assert_eq!(
            lines[1..],
            expected[..],
            "{query} at P={parallelism}: result differs from the oracle"
        );
    }
}

fn ts(ms: i64) -> String {
    format_timestamp(ms)
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

/// The rows assigned to each variable so far (not the row being tested).
type Bindings = Vec<Vec<Tick>>;

/// A `DEFINE` in Rust: the bindings before the row, and the row.
type Condition = Box<dyn Fn(&Bindings, &Tick) -> bool>;

struct Var {
    min: u32,
    max: Option<u32>,
    greedy: bool,
    cond: Condition,
}

impl Var {
    fn new(min: u32, max: Option<u32>, cond: impl Fn(&Bindings, &Tick) -> bool + 'static) -> Self {
        let loops = max != Some(min.max(1));
        Self {
            min,
            max,
            greedy: loops,
            cond: Box::new(cond),
        }
    }

    fn reluctant(mut self) -> Self {
        self.greedy = false;
        self
    }

    fn loops(&self) -> bool {
        self.max != Some(self.min.max(1))
    }
}

#[derive(Debug, Clone, Copy)]
enum Skip {
    PastLastRow,
    ToNextRow,
    ToFirst(usize),
    ToLast(usize),
}

/// A match: `(variable, event index)` per row, in order.
type Assignment = Vec<(usize, usize)>;

fn bindings(vars: &[Var], events: &[&Tick], assign: &[(usize, usize)]) -> Bindings {
    let mut b: Bindings = vec![Vec::new(); vars.len()];
    for &(v, i) in assign {
        b[v].push(events[i].clone());
    }
    b
}

fn enumerate(
    vars: &[Var],
    within: Option<i64>,
    events: &[&Tick],
    assign: &mut Assignment,
    next: usize,
    out: &mut Vec<Assignment>,
) {
    if next >= events.len() {
        return;
    }
    if let (Some(w), Some(&(_, first))) = (within, assign.first())
        && events[next].ms - events[first].ms >= w
    {
        return;
    }
    let b = bindings(vars, events, assign);
    let event = events[next];
    let candidates: Vec<usize> = match assign.last() {
        None => (0..vars.len())
            .take_while(|&j| j == 0 || vars[j - 1].min == 0)
            .collect(),
        Some(&(k, _)) => {
            let count = assign.iter().filter(|(v, _)| *v == k).count() as u32;
            let mut c = Vec::new();
            let can_stay = vars[k].max.is_none_or(|m| count < m);
            if can_stay {
                c.push(k);
            }
            let blocked =
                vars[k].greedy && vars[k].loops() && can_stay && (vars[k].cond)(&b, event);
            if count >= vars[k].min && !blocked {
                for (j, var) in vars.iter().enumerate().skip(k + 1) {
                    c.push(j);
                    if var.min > 0 {
                        break;
                    }
                }
            }
            c
        }
    };
    for j in candidates {
        if !(vars[j].cond)(&b, event) {
            continue;
        }
        assign.push((j, next));
        let count = assign.iter().filter(|(v, _)| *v == j).count() as u32;
        if count >= vars[j].min && vars[j + 1..].iter().all(|v| v.min == 0) {
            out.push(assign.clone());
        }
        enumerate(vars, within, events, assign, next + 1, out);
        assign.pop();
    }
}

/// The matches of one partition, in emission order, after skipping.
fn oracle_matches(
    vars: &[Var],
    within: Option<i64>,
    skip: Skip,
    events: &[&Tick],
) -> Vec<Assignment> {
    let mut all = Vec::new();
    for start in 0..events.len() {
        enumerate(vars, within, events, &mut Vec::new(), start, &mut all);
    }
    all.sort_by(|a, b| {
        let key = |m: &Assignment| (m.last().map(|x| x.1), m[0].1);
        key(a).cmp(&key(b)).then(a.cmp(b))
    });
    let mut excluded = vec![false; all.len()];
    let mut emitted = Vec::new();
    for k in 0..all.len() {
        if excluded[k] {
            continue;
        }
        let m = all[k].clone();
        let of = |v: usize| {
            m.iter()
                .filter(|x| x.0 == v)
                .map(|x| x.1)
                .collect::<Vec<_>>()
        };
        let bound = match skip {
            Skip::ToNextRow => Some((m[0].1, true)),
            Skip::PastLastRow => m.last().map(|x| (x.1, true)),
            Skip::ToFirst(v) => of(v).first().map(|&i| (i, false)),
            Skip::ToLast(v) => of(v).last().map(|&i| (i, false)),
        };
        if let Some((bound, inclusive)) = bound {
            for (q, other) in all.iter().enumerate() {
                let start = other[0].1;
                if start < bound || (inclusive && start == bound) {
                    excluded[q] = true;
                }
            }
        }
        emitted.push(m);
    }
    emitted
}

/// The oracle's result: per partition (all rows as one partition if `partitioned` is false),
/// one line per match: the partition's symbol (if partitioned), then `measures`.
fn oracle(
    ticks: &[Tick],
    partitioned: bool,
    vars: &[Var],
    within: Option<i64>,
    skip: Skip,
    measures: impl Fn(&Bindings) -> Vec<String>,
) -> Vec<String> {
    let partitions: Vec<Option<&str>> = if partitioned {
        SYMBOLS.iter().map(|s| Some(*s)).collect()
    } else {
        vec![None]
    };
    let mut lines = Vec::new();
    for partition in partitions {
        let events: Vec<&Tick> = ticks
            .iter()
            .filter(|t| partition.is_none_or(|p| t.symbol == p))
            .collect();
        for m in oracle_matches(vars, within, skip, &events) {
            let b = bindings(vars, &events, &m);
            let mut fields: Vec<String> = partition.iter().map(|p| p.to_string()).collect();
            fields.extend(measures(&b));
            lines.push(fields.join(","));
        }
    }
    lines
}

fn last(rows: &[Tick], offset: usize) -> Option<&Tick> {
    rows.len().checked_sub(offset + 1).map(|i| &rows[i])
}

fn opt(v: Option<i64>) -> String {
    v.map_or("<NULL>".to_string(), |v| v.to_string())
}

fn opt_ts(v: Option<i64>) -> String {
    v.map_or("<NULL>".to_string(), ts)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const V_SHAPE: &str = "SELECT * FROM ticker MATCH_RECOGNIZE (
    PARTITION BY symbol
    ORDER BY ts
    MEASURES
        START_ROW.ts AS start_tstamp,
        LAST(PRICE_DOWN.ts) AS bottom_tstamp,
        LAST(PRICE_UP.ts) AS end_tstamp
    ONE ROW PER MATCH
    AFTER MATCH SKIP TO LAST PRICE_UP
    PATTERN (START_ROW PRICE_DOWN+ PRICE_UP)
    DEFINE
        PRICE_DOWN AS
            (LAST(PRICE_DOWN.price, 1) IS NULL AND PRICE_DOWN.price < START_ROW.price) OR
                PRICE_DOWN.price < LAST(PRICE_DOWN.price, 1),
        PRICE_UP AS
            PRICE_UP.price > LAST(PRICE_DOWN.price, 1)
) MR";

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_v_shape_example_of_flinks_documentation() {
    // Flink's example table: ACME's prices each second from 10:00:00.
    let prices = [12, 17, 19, 21, 25, 18, 15, 14, 24, 25, 19];
    let base = 1_301_652_000_000i64; // 2011-04-01 10:00:00 UTC
    let ticks: Vec<Tick> = prices
        .iter()
        .enumerate()
        .map(|(i, &price)| Tick {
            symbol: "ACME",
            price,
            ms: base + i as i64 * 1_000,
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ticker.csv");
    write_csv(&path, &ticks);
    // The documented answer: from 10:00:04 (25) down to 10:00:07 (14), up at 10:00:08 (24).
    check(
        &path,
        V_SHAPE,
        "symbol,start_tstamp,bottom_tstamp,end_tstamp",
        vec![format!(
            "ACME,{},{},{}",
            ts(base + 4_000),
            ts(base + 7_000),
            ts(base + 8_000)
        )],
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn match_recognize_equals_the_brute_force_matcher() {
    let ticks = ticks(300, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ticker.csv");
    write_csv(&path, &ticks);

    // 1. The V shape of Flink's documentation, on random prices.
    let vars = [
        Var::new(1, Some(1), |_, _| true),
        Var::new(1, None, |b: &Bindings, t: &Tick| match last(&b[1], 0) {
            None => t.price < b[0][0].price,
            Some(prev) => t.price < prev.price,
        }),
        Var::new(1, Some(1), |b: &Bindings, t: &Tick| {
            last(&b[1], 1).is_some_and(|p| t.price > p.price)
        }),
    ];
    let expected = oracle(&ticks, true, &vars, None, Skip::ToLast(2), |b| {
        vec![
            ts(b[0][0].ms),
            ts(b[1].last().expect("down").ms),
            ts(b[2][0].ms),
        ]
    });
    check(
        &path,
        V_SHAPE,
        "symbol,start_tstamp,bottom_tstamp,end_tstamp",
        expected,
    )
    .await;

    // 2. Aggregates in DEFINE and MEASURES (Flink's average-price example): a run whose
    //    average stays below 12, then any row; MATCH_ROWTIME() and the universal variable.
    let query = "SELECT * FROM ticker MATCH_RECOGNIZE (
        PARTITION BY symbol ORDER BY ts
        MEASURES FIRST(A.ts) AS start_tstamp, LAST(A.ts) AS end_tstamp,
                 AVG(A.price) AS avg_price, SUM(A.price) AS total, COUNT(*) AS n,
                 MATCH_ROWTIME() AS rt, price AS last_price
        ONE ROW PER MATCH
        AFTER MATCH SKIP PAST LAST ROW
        PATTERN (A+ B)
        DEFINE A AS AVG(A.price) < 12
    ) AS T";
    let vars = [
        Var::new(1, None, |b: &Bindings, t: &Tick| {
            let sum: i64 = b[0].iter().map(|x| x.price).sum::<i64>() + t.price;
            sum / (b[0].len() as i64 + 1) < 12
        }),
        Var::new(1, Some(1), |_, _| true),
    ];
    let expected = oracle(&ticks, true, &vars, None, Skip::PastLastRow, |b| {
        let sum: i64 = b[0].iter().map(|x| x.price).sum();
        vec![
            ts(b[0][0].ms),
            ts(b[0].last().expect("a").ms),
            (sum / b[0].len() as i64).to_string(),
            sum.to_string(),
            (b[0].len() + 1).to_string(),
            ts(b[1][0].ms),
            b[1][0].price.to_string(),
        ]
    });
    check(
        &path,
        query,
        "symbol,start_tstamp,end_tstamp,avg_price,total,n,rt,last_price",
        expected,
    )
    .await;

    // 3. A price drop within a time bound (Flink's WITHIN example), reluctant middle.
    let query = "SELECT * FROM ticker MATCH_RECOGNIZE (
        PARTITION BY symbol ORDER BY ts
        MEASURES C.ts AS drop_time, A.price - C.price AS drop_diff, COUNT(B.price) AS between_rows
        AFTER MATCH SKIP PAST LAST ROW
        PATTERN (A B*? C) WITHIN INTERVAL '2' SECOND
        DEFINE B AS B.price > A.price - 10, C AS C.price < A.price - 10
    ) AS T";
    let vars = [
        Var::new(1, Some(1), |_, _| true),
        Var::new(0, None, |b: &Bindings, t: &Tick| {
            t.price > b[0][0].price - 10
        })
        .reluctant(),
        Var::new(1, Some(1), |b: &Bindings, t: &Tick| {
            t.price < b[0][0].price - 10
        }),
    ];
    let expected = oracle(&ticks, true, &vars, Some(2_000), Skip::PastLastRow, |b| {
        vec![
            ts(b[2][0].ms),
            (b[0][0].price - b[2][0].price).to_string(),
            b[1].len().to_string(),
        ]
    });
    check(
        &path,
        query,
        "symbol,drop_time,drop_diff,between_rows",
        expected,
    )
    .await;

    // 4. Bounded and optional quantifiers, SKIP TO NEXT ROW, a NULL measure.
    let query = "SELECT * FROM ticker MATCH_RECOGNIZE (
        PARTITION BY symbol ORDER BY ts
        MEASURES A.price AS a, COUNT(B.price) AS bs, LAST(C.price) AS c, D.price AS d,
                 FIRST(B.price, 1) AS b2
        AFTER MATCH SKIP TO NEXT ROW
        PATTERN (A B{2,3} C? D)
        DEFINE A AS price > 15, B AS price < A.price, C AS price > 25,
               D AS D.price > LAST(B.price)
    ) AS T";
    let vars = [
        Var::new(1, Some(1), |_, t: &Tick| t.price > 15),
        Var::new(2, Some(3), |b: &Bindings, t: &Tick| t.price < b[0][0].price),
        Var::new(0, Some(1), |_, t: &Tick| t.price > 25),
        Var::new(1, Some(1), |b: &Bindings, t: &Tick| {
            last(&b[1], 0).is_some_and(|x| t.price > x.price)
        }),
    ];
    let expected = oracle(&ticks, true, &vars, None, Skip::ToNextRow, |b| {
        vec![
            b[0][0].price.to_string(),
            b[1].len().to_string(),
            opt(b[2].last().map(|x| x.price)),
            b[3][0].price.to_string(),
            opt(b[1].get(1).map(|x| x.price)),
        ]
    });
    check(&path, query, "symbol,a,bs,c,d,b2", expected).await;

    // 5. SKIP TO FIRST with an exact count.
    let query = "SELECT * FROM ticker MATCH_RECOGNIZE (
        PARTITION BY symbol ORDER BY ts
        MEASURES A.ts AS a_ts, LAST(B.ts) AS b_ts, C.price AS c
        AFTER MATCH SKIP TO FIRST B
        PATTERN (A B{2} C)
        DEFINE A AS price < 20, B AS B.price > A.price, C AS C.price < LAST(B.price)
    ) AS T";
    let vars = [
        Var::new(1, Some(1), |_, t: &Tick| t.price < 20),
        Var::new(2, Some(2), |b: &Bindings, t: &Tick| t.price > b[0][0].price),
        Var::new(1, Some(1), |b: &Bindings, t: &Tick| {
            last(&b[1], 0).is_some_and(|x| t.price < x.price)
        }),
    ];
    let expected = oracle(&ticks, true, &vars, None, Skip::ToFirst(1), |b| {
        vec![
            ts(b[0][0].ms),
            opt_ts(b[1].last().map(|x| x.ms)),
            b[2][0].price.to_string(),
        ]
    });
    check(&path, query, "symbol,a_ts,b_ts,c", expected).await;

    // 6. No PARTITION BY: every row in one sequence.
    let query = "SELECT * FROM ticker MATCH_RECOGNIZE (
        ORDER BY ts
        MEASURES A.symbol AS first_symbol, B.symbol AS second_symbol, B.price - A.price AS rise
        AFTER MATCH SKIP PAST LAST ROW
        PATTERN (A B)
        DEFINE A AS symbol = 'ACME', B AS B.price > A.price + 20
    ) AS T";
    let vars = [
        Var::new(1, Some(1), |_, t: &Tick| t.symbol == "ACME"),
        Var::new(1, Some(1), |b: &Bindings, t: &Tick| {
            t.price > b[0][0].price + 20
        }),
    ];
    let expected = oracle(&ticks, false, &vars, None, Skip::PastLastRow, |b| {
        vec![
            b[0][0].symbol.to_string(),
            b[1][0].symbol.to_string(),
            (b[1][0].price - b[0][0].price).to_string(),
        ]
    });
    check(&path, query, "first_symbol,second_symbol,rise", expected).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_result_feeds_a_window_aggregation_over_match_rowtime() {
    let ticks = ticks(200, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ticker.csv");
    write_csv(&path, &ticks);
    let query = "CREATE VIEW rises AS SELECT * FROM ticker MATCH_RECOGNIZE (
          PARTITION BY symbol ORDER BY ts
          MEASURES MATCH_ROWTIME() AS rt
          AFTER MATCH SKIP PAST LAST ROW
          PATTERN (A B)
          DEFINE B AS B.price > A.price
        ) AS T;;
      SELECT window_start, COUNT(*) AS matches
      FROM TABLE(TUMBLE(TABLE rises, DESCRIPTOR(rt), INTERVAL '10' SECOND))
      GROUP BY window_start, window_end";
    let vars = [
        Var::new(1, Some(1), |_, _| true),
        Var::new(1, Some(1), |b: &Bindings, t: &Tick| t.price > b[0][0].price),
    ];
    let times: Vec<i64> = oracle(&ticks, true, &vars, None, Skip::PastLastRow, |b| {
        vec![b[1][0].ms.to_string()]
    })
    .iter()
    .map(|l| l.split(',').nth(1).expect("ms").parse().expect("ms"))
    .collect();
    let mut windows = std::collections::BTreeMap::<i64, u64>::new();
    for t in times {
        *windows.entry(t - t % 10_000).or_default() += 1;
    }
    let expected = windows
        .iter()
        .map(|(start, n)| format!("{},{n}", eichhorn_sql::types::format_timestamp(*start)))
        .collect();
    check(&path, query, "window_start,matches", expected).await;
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

const ROWS: u64 = 3_000;
const FAIL_AT: u64 = 1_800;

fn row(g: u64) -> Row {
    let mixed = splitmix64(g);
    vec![
        Value::BigInt((mixed % 5) as i64),
        Value::BigInt((mixed >> 40) as i64 % 100),
        Value::TimestampLtz(g as i64 * 10),
    ]
}

fn committed_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

async fn run_paced(
    query: &str,
    parallelism: u32,
    backend: StateBackendKind,
    dir: &Path,
    out: &Path,
    failed: Option<&'static AtomicBool>,
) -> eichhorn::JobResult {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(10);
    env.set_state_backend(backend);
    env.configure(|c| {
        c.local_state_dir = Some(dir.join("local"));
        c.auto_watermark_interval_ms = 20;
    });
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let rows = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(ROWS), |g| g), 10_000),
            "paced",
        )
        .set_parallelism(1)
        .map(move |g: u64| {
            if let Some(failed) = failed
                && g == FAIL_AT
                && !failed.swap(true, Ordering::SeqCst)
            {
                panic!("injected failure at row {g}");
            }
            row(g)
        })
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|r: &Row, _| r[2].as_i64().unwrap_or(i64::MIN)),
        )
        .set_parallelism(1);
    let schema = Schema::new(vec![
        Column::new("k", DataType::BigInt),
        Column::new("v", DataType::BigInt),
        Column {
            name: "ts".into(),
            data_type: DataType::TimestampLtz,
            rowtime: true,
        },
    ]);
    let mut tenv = TableEnv::new(&env);
    tenv.from_data_stream("events", rows, schema)
        .expect("register");
    let table = tenv.sql_query(query).expect("plan");
    tenv.to_changelog_stream(&table)
        .expect("translate")
        .write_exactly_once(out, |c: &Change| c.to_string());
    tokio::time::timeout(
        Duration::from_secs(120),
        env.execute("match_recognize recovers"),
    )
    .await
    .expect("the job hung")
    .unwrap_or_else(|e| panic!("{query} P={parallelism} {backend:?}: {e}"))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn match_recognize_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    // Partial matches (rising runs) span many rows, so some are open in the checkpoint the
    // job restores from: they must continue, neither lost nor reported twice.
    let query = "SELECT * FROM events MATCH_RECOGNIZE (
        PARTITION BY k ORDER BY ts
        MEASURES FIRST(A.ts) AS start_ts, COUNT(A.v) AS ups, SUM(A.v) AS total, B.v AS last_v
        AFTER MATCH SKIP PAST LAST ROW
        PATTERN (A{2,} B)
        DEFINE A AS LAST(A.v, 1) IS NULL OR A.v >= LAST(A.v, 1) - 30, B AS B.v < LAST(A.v) - 30
    ) AS T";
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = dir.path().join("reference");
    let result = run_paced(
        query,
        1,
        StateBackendKind::Memory,
        dir.path(),
        &reference,
        None,
    )
    .await;
    assert_eq!(result.restarts, 0);
    let expected = committed_lines(&reference);
    assert!(expected.len() > 20, "{} lines", expected.len());
    for (parallelism, backend) in [(1, StateBackendKind::Memory), (2, StateBackendKind::Lmdb)] {
        let context = format!("P={parallelism} {backend:?}");
        let out = dir.path().join(format!("out-{parallelism}-{backend:?}"));
        FAILED.store(false, Ordering::SeqCst);
        let result = run_paced(query, parallelism, backend, dir.path(), &out, Some(&FAILED)).await;
        assert!(FAILED.load(Ordering::SeqCst), "{context}: the map failed");
        assert_eq!(result.restarts, 1, "{context}");
        assert!(
            result.restored_from.is_some(),
            "{context}: restored from a checkpoint"
        );
        assert_eq!(committed_lines(&out), expected, "{context}");
    }
}
