CREATE TABLE t (
  ms BIGINT,
  WATERMARK FOR ms AS ms
) WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'x.csv');
