//! Statements beyond a single query: views, `INSERT INTO` print and blackhole tables, the
//! `datagen` connector, `SHOW TABLES`, `DESCRIBE`, `EXPLAIN`, and the Table API round trip
//! (`from_data_stream`, `sql_query`, `to_data_stream`).

use eichhorn::StreamEnv;
use eichhorn_sql::types::materialize;
use eichhorn_sql::{Change, Column, DataType, Row, Schema, TableEnv, TableResult, Value};

fn csv_table(path: &std::path::Path) -> String {
    format!(
        "CREATE TABLE bids (item STRING, price BIGINT) \
         WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        path.display()
    )
}

fn rows(result: TableResult) -> Vec<String> {
    let TableResult::Rows { changes, .. } = result else {
        panic!("not rows: {result:?}");
    };
    materialize(changes)
        .expect("consistent")
        .into_iter()
        .flat_map(|(row, n)| {
            let line = row
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            std::iter::repeat_n(line, n as usize)
        })
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_view_over_an_aggregation_is_aggregated_again_with_retractions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bids.csv");
    std::fs::write(&path, "a,1\nb,2\na,3\nc,4\nb,5\na,6\n").expect("write");
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let mut tenv = TableEnv::new(&env);
        tenv.execute_sql(&csv_table(&path)).await.expect("table");
        tenv.execute_sql(
            "CREATE VIEW per_item AS SELECT item, COUNT(*) AS n FROM bids GROUP BY item",
        )
        .await
        .expect("view");
        // How many items have each count: the inner counts change, so the outer aggregation
        // sees retractions (-U) and must undo them.
        let result = tenv
            .execute_sql("SELECT n, COUNT(*) AS items FROM per_item GROUP BY n")
            .await
            .expect("query");
        assert_eq!(rows(result), vec!["1,1", "2,1", "3,1"], "P={parallelism}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn insert_into_sinks_datagen_show_describe_and_explain() {
    let mut tenv = TableEnv::new(&StreamEnv::new());
    tenv.execute_sql(
        "CREATE TABLE gen (id BIGINT, name STRING, score DOUBLE) \
         WITH ('connector' = 'datagen', 'number-of-rows' = '50')",
    )
    .await
    .expect("datagen");
    tenv.execute_sql("CREATE TABLE out (id BIGINT, name STRING) WITH ('connector' = 'blackhole')")
        .await
        .expect("blackhole");
    tenv.execute_sql("CREATE TEMPORARY TABLE shown (n BIGINT) WITH ('connector' = 'print')")
        .await
        .expect("print");
    let TableResult::Inserted { job } = tenv
        .execute_sql("INSERT INTO out SELECT id, name FROM gen WHERE score >= 0")
        .await
        .expect("insert")
    else {
        panic!("not an insert");
    };
    assert!(
        job.operators.iter().any(|op| op.records_in >= 50),
        "{:?}",
        job.operators
    );
    tenv.execute_sql("INSERT INTO shown SELECT COUNT(*) FROM gen")
        .await
        .expect("insert into print");
    let error = tenv
        .execute_sql("INSERT INTO out SELECT name, id FROM gen")
        .await
        .expect_err("columns in the wrong order");
    assert!(
        error
            .to_string()
            .contains("do not fit the columns of 'out'"),
        "{error}"
    );
    let result = tenv
        .execute_sql("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS d FROM gen")
        .await;
    assert_eq!(rows(result.expect("count")), vec!["50,50"]);

    let TableResult::Text(tables) = tenv.execute_sql("SHOW TABLES").await.expect("show") else {
        panic!("text");
    };
    assert_eq!(tables, "gen\nout\nshown\n");
    let TableResult::Text(description) = tenv.execute_sql("DESCRIBE gen").await.expect("describe")
    else {
        panic!("text");
    };
    assert!(
        description.starts_with("id,BIGINT\nname,STRING\nscore,DOUBLE\n"),
        "{description}"
    );
    let TableResult::Text(plan) = tenv
        .execute_sql("EXPLAIN INSERT INTO out SELECT id, name FROM gen")
        .await
        .expect("explain")
    else {
        panic!("text");
    };
    assert!(plan.starts_with("Sink(table=[out])"), "{plan}");
    assert!(plan.contains("TableSourceScan(table=[gen]"), "{plan}");
    assert!(plan.contains("append-only"), "{plan}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_data_stream_goes_through_sql_and_back() {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let input: Vec<Row> = (0..20)
        .map(|i| vec![Value::String(format!("k{}", i % 3)), Value::BigInt(i)])
        .collect();
    let mut tenv = TableEnv::new(&env);
    tenv.from_data_stream(
        "numbers",
        env.from_collection(input),
        Schema::new(vec![
            Column::new("k", DataType::String),
            Column::new("v", DataType::BigInt),
        ]),
    )
    .expect("register");
    let evens = tenv
        .sql_query("SELECT k, v * 10 AS w FROM numbers WHERE MOD(v, 2) = 0")
        .expect("plan");
    assert!(evens.is_append_only());
    let out = tenv
        .to_data_stream(&evens)
        .expect("append-only")
        .collect_sink();
    let totals = tenv
        .sql_query("SELECT k, SUM(v) AS s FROM numbers GROUP BY k")
        .expect("plan");
    assert!(
        tenv.to_data_stream(&totals).is_err(),
        "an updating table has no data stream"
    );
    let changes = tenv
        .to_changelog_stream(&totals)
        .expect("changelog")
        .collect_sink();
    env.execute("round trip").await.expect("job");
    let mut got: Vec<Row> = out.take();
    got.sort();
    let mut expected: Vec<Row> = (0..20)
        .filter(|i| i % 2 == 0)
        .map(|i| vec![Value::String(format!("k{}", i % 3)), Value::BigInt(i * 10)])
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    let finals = materialize(changes.take()).expect("consistent");
    let sums: Vec<(String, i64)> = finals
        .keys()
        .map(|r| (r[0].to_string(), r[1].as_i64().expect("sum")))
        .collect();
    let oracle: Vec<(String, i64)> = (0..3)
        .map(|k| (format!("k{k}"), (0..20).filter(|i| i % 3 == k).sum()))
        .collect();
    assert_eq!(sums, oracle);
    let _ = Change::insert(Vec::new());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_table_api_windows_and_aggregates_like_sql() {
    use eichhorn::time::WatermarkStrategy;
    use eichhorn_sql::table_api::{Tumble, col, lit};
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let input: Vec<Row> = (0..40)
            .map(|i| {
                vec![
                    Value::String(format!("s{}", i % 3)),
                    Value::BigInt(i),
                    Value::TimestampLtz(i * 250),
                ]
            })
            .collect();
        let stream = env.from_collection(input).assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|r: &Row, _| r[2].as_i64().unwrap_or(i64::MIN)),
        );
        let mut tenv = TableEnv::new(&env);
        let mut ts = Column::new("ts", DataType::TimestampLtz);
        ts.rowtime = true;
        tenv.from_data_stream(
            "readings",
            stream,
            Schema::new(vec![
                Column::new("sensor", DataType::String),
                Column::new("v", DataType::BigInt),
                ts,
            ]),
        )
        .expect("register");
        let table = tenv
            .from("readings")
            .expect("from")
            .filter(col("v").ge(lit(4)))
            .expect("filter")
            .window(Tumble::over(lit(2).seconds()).on(col("ts")).alias("w"))
            .expect("window")
            .group_by(&[col("w"), col("sensor")])
            .select(&[
                col("w").start().alias("start"),
                col("sensor"),
                col("v").count().alias("n"),
                col("v").sum().alias("total"),
            ])
            .expect("select");
        assert!(table.is_append_only());
        assert_eq!(
            table.schema().names(),
            vec!["start", "sensor", "n", "total"]
        );
        let out = tenv.to_data_stream(&table).expect("rows").collect_sink();
        env.execute("table api windows").await.expect("job");
        let mut got: Vec<String> = out
            .take()
            .iter()
            .map(|r| {
                r.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        got.sort();
        let mut groups: std::collections::BTreeMap<(i64, i64), (i64, i64)> = Default::default();
        for i in 4..40i64 {
            let entry = groups.entry((i * 250 / 2_000, i % 3)).or_default();
            entry.0 += 1;
            entry.1 += i;
        }
        let mut expected: Vec<String> = groups
            .iter()
            .map(|((w, s), (n, t))| {
                format!(
                    "{},s{s},{n},{t}",
                    eichhorn_sql::types::format_timestamp(w * 2_000)
                )
            })
            .collect();
        expected.sort();
        assert_eq!(got, expected, "P={parallelism}");
    }
}

/// Rows behind the watermark for every window they belong to are dropped, as in Flink, but
/// counted: the window aggregation's `late_records` metric and `TableResult::late_rows` name
/// how many.
///
/// At parallelism 1 the watermark reaches the aggregation in the source's order, so which rows
/// are late is exact. Above 1, the projection before the aggregation runs in several subtasks
/// and the aggregation's watermark is the minimum over them, so whether a row is late depends
/// on how the channels interleave (as in Flink); there the test checks that every row is
/// either counted in a window or reported late, never lost.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn late_rows_of_a_window_aggregation_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("late.csv");
    // Watermark delay 0: after the row at 12 s the watermark is 11.999 s, so [0 s, 10 s) has
    // fired and the rows at 3 s and 4 s are late; the one at 10.5 s is not.
    std::fs::write(
        &path,
        "a,1000\nb,5000\na,12000\na,3000\nb,4000\nb,10500\na,15000\n",
    )
    .expect("write");
    let late_of = |result: &TableResult, operator: &str| -> u64 {
        let late = result.late_rows();
        assert!(
            late.iter().all(|(name, _)| name == operator),
            "late rows of other operators: {late:?}"
        );
        late.iter().map(|(_, n)| n).sum()
    };
    let counted = |lines: &[String]| -> u64 {
        lines
            .iter()
            .map(|l| {
                l.rsplit(',')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .expect("count")
            })
            .sum()
    };
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let mut tenv = TableEnv::new(&env);
        tenv.execute_sql(&format!(
            "CREATE TABLE t (k STRING, ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), \
             WATERMARK FOR ts AS ts) \
             WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
            path.display()
        ))
        .await
        .expect("table");
        let result = tenv
            .execute_sql(
                "SELECT window_start, COUNT(*) AS n \
                 FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
                 GROUP BY window_start, window_end",
            )
            .await
            .expect("query");
        let late = late_of(&result, "WindowAggregate(TUMBLE)");
        let mut lines = rows(result);
        lines.sort();
        assert_eq!(
            counted(&lines) + late,
            7,
            "P={parallelism}: {lines:?}, {late} late"
        );
        if parallelism == 1 {
            assert_eq!(late, 2);
            assert_eq!(
                lines,
                vec!["1970-01-01 00:00:00.000,2", "1970-01-01 00:00:10.000,3"]
            );
        }
        // Sessions count their late rows too: with a 1 s gap, the row at 10.5 s would start a
        // session ending at 11.5 s, already behind the watermark, so it is late as well.
        let result = tenv
            .execute_sql(
                "SELECT k, COUNT(*) AS n \
                 FROM TABLE(SESSION(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND)) \
                 GROUP BY window_start, window_end, k",
            )
            .await
            .expect("session query");
        let late = late_of(&result, "WindowAggregate(SESSION)");
        let lines = rows(result);
        assert_eq!(
            counted(&lines) + late,
            7,
            "P={parallelism}: {lines:?}, {late} late"
        );
        if parallelism == 1 {
            assert_eq!(late, 3);
        }
    }
}

/// The Table API's joins compose the same SQL joins: a left outer join of two registered
/// streams, checked against a plain computation at parallelism 1, 2 and 4; a column on both
/// sides is reported ambiguous.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_table_api_joins_like_sql() {
    use eichhorn_sql::table_api::col;
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let orders: Vec<Row> = (0..30)
            .map(|i| vec![Value::BigInt(i), Value::BigInt(i % 7)])
            .collect();
        let customers: Vec<Row> = (0..5)
            .map(|c| vec![Value::BigInt(c), Value::String(format!("c{c}"))])
            .collect();
        let mut tenv = TableEnv::new(&env);
        tenv.from_data_stream(
            "orders",
            env.from_collection(orders),
            Schema::new(vec![
                Column::new("id", DataType::BigInt),
                Column::new("customer", DataType::BigInt),
            ]),
        )
        .expect("orders");
        tenv.from_data_stream(
            "customers",
            env.from_collection(customers),
            Schema::new(vec![
                Column::new("cid", DataType::BigInt),
                Column::new("name", DataType::String),
            ]),
        )
        .expect("customers");
        let orders = tenv.from("orders").expect("from orders");
        let customers = tenv.from("customers").expect("from customers");
        let ambiguous = orders
            .join(&orders, col("id").is_equal(col("customer")))
            .expect_err("id is on both sides");
        assert!(ambiguous.to_string().contains("ambiguous"), "{ambiguous}");
        let joined = orders
            .left_outer_join(&customers, col("customer").is_equal(col("cid")))
            .expect("join")
            .select(&[col("id"), col("name")])
            .expect("select");
        assert!(!joined.is_append_only());
        let out = tenv
            .to_changelog_stream(&joined)
            .expect("translate")
            .collect_sink();
        env.execute("table api join").await.expect("job");
        let mut lines: Vec<String> = materialize(out.take())
            .expect("consistent")
            .into_iter()
            .map(|(row, n)| {
                assert_eq!(n, 1);
                format!("{},{}", row[0], row[1])
            })
            .collect();
        lines.sort();
        let mut expected: Vec<String> = (0..30)
            .map(|i| match i % 7 {
                c if c < 5 => format!("{i},c{c}"),
                _ => format!("{i},<NULL>"),
            })
            .collect();
        expected.sort();
        assert_eq!(lines, expected, "P={parallelism}");
    }
}
