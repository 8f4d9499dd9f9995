CREATE TABLE bids (
  item STRING,
  price BIGINT,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/bids.csv');
SELECT a.item FROM bids a
  JOIN (SELECT item, COUNT(*) AS n FROM bids GROUP BY item) b ON a.item = b.item
    AND b.n BETWEEN 1 AND 2
    AND a.nope = 1;
