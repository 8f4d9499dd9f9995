CREATE TABLE bids (item STRING, price BIGINT, ms BIGINT)
WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = 'tests/data/malformed.csv');
SELECT item, price FROM bids;
