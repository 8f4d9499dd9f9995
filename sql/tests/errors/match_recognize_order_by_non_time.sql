CREATE TABLE bids (
  item STRING,
  price BIGINT,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/bids.csv');
SELECT * FROM bids MATCH_RECOGNIZE (
  PARTITION BY item ORDER BY price
  MEASURES A.price AS p
  PATTERN (A B)
  DEFINE B AS B.price > A.price
) AS t;
