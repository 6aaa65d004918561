-- The range of user ids a date's feature build splits into shards (recsys.data.features): the
-- smallest and largest id of the users table and of the purchases (both read from an index). A
-- user outside it still belongs to the first or the last shard, whose ranges are open. And the size
-- of the events table on disk: a small shop is built on one connection.
select
    least(u.lo, p.lo) as lo,
    greatest(u.hi, p.hi) as hi,
    (
        select coalesce(sum(pg_relation_size(i.inhrelid)), 0)
        from pg_inherits as i
        where i.inhparent = 'recsys.behavior_events'::regclass
    ) as event_bytes
from (
    select
        min(user_id) as lo,
        max(user_id) as hi
    from recsys.users
) as u
cross join (
    select
        min(e.user_id) as lo,
        max(e.user_id) as hi
    from recsys.behavior_events as e
    where e.action = 'purchase'
) as p
