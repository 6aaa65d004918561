-- The product's tables with rows changed in this session that are not yet in the cumulative
-- statistics (pg_stat_xact_user_tables: this transaction's changes, and those of the session's
-- earlier transactions until the session reports them, at most once a second), each with the
-- changes autovacuum's rule asks for before an analyze (autovacuum_analyze_threshold +
-- autovacuum_analyze_scale_factor x the rows the table had at its last analyze, none when it never
-- had one). The load reads this before and after its writes: the difference is its own changes.
-- Leaf tables only (a monthly events partition, not the partitioned parent), as autovacuum does.
select
    x.schemaname,
    x.relname,
    x.n_tup_ins + x.n_tup_upd + x.n_tup_del as changed,
    current_setting('autovacuum_analyze_threshold')::double precision
    + current_setting('autovacuum_analyze_scale_factor')::double precision * greatest(c.reltuples, 0)
        as analyze_after
from pg_stat_xact_user_tables as x
inner join pg_class as c on x.relid = c.oid
where x.schemaname = 'recsys' and c.relkind = 'r'
