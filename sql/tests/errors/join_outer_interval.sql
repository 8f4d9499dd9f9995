CREATE TABLE bids (
  item STRING,
  price BIGINT,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/bids.csv');
SELECT a.item FROM bids a
  LEFT JOIN bids b ON a.item = b.item
    AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts;
