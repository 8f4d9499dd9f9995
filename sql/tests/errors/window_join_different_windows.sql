CREATE TABLE bids (
  item STRING,
  price BIGINT,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/bids.csv');
SELECT a.item, b.price
FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' SECOND)) a
  JOIN TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '2' SECOND)) b
  ON a.item = b.item AND a.window_start = b.window_start AND a.window_end = b.window_end;
