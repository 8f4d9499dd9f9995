CREATE TABLE t (a STRING)
WITH ('connector' = 'filesystem', 'format' = 'csv');
