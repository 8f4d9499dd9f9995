SET 'table.exec.state.ttl' = '3 fortnights';
