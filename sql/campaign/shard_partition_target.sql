-- name: the date's partition (schema-qualified). Whether shard K of N builds its own hash
-- sub-partition and attaches it: the date's partition is sub-partitioned by hash of user_id, every
-- sub-partition it has is of modulus N, and none is of remainder K yet
select
    coalesce(bool_and(b.modulus = %(shards)s), true)
    and not coalesce(bool_or(b.remainder = %(shard)s), false) as attach
from pg_partitioned_table as pt
left join lateral recsys.hash_partition_bounds(pt.partrelid) as b on true
where pt.partrelid = to_regclass(%(name)s) and pt.partstrat = 'h'
group by pt.partrelid
