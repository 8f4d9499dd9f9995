CREATE TABLE orders (
  id BIGINT,
  currency STRING,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/bids.csv');
CREATE TABLE rates (
  currency STRING,
  rate BIGINT,
  ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/bids.csv');
SELECT o.id, r.rate FROM orders o
  JOIN rates FOR SYSTEM_TIME AS OF o.ms AS r ON o.currency = r.currency;
