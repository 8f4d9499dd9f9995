CREATE TABLE bids (
  item STRING,
  price BIGINT,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/bids.csv');
SELECT item, price FROM bids ORDER BY price
LIMIT 'ten';
