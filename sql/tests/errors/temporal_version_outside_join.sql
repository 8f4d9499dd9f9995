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
SELECT rate FROM rates FOR SYSTEM_TIME AS OF TIMESTAMP '2024-01-01 00:00:00';
