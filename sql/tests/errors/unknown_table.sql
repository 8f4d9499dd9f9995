SELECT a FROM nope;
