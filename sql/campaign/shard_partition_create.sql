-- a standalone table shaped like one shard's hash sub-partition of a date's partition; its checks
-- equal the partition constraint (the date and the hash), so ATTACH skips its validation scan
-- exempt from the linter's parser on the next line: it reads no "including compression"
create table {part} (  -- noqa: PRS
    like {parent} including defaults including constraints including storage including compression,
    constraint {check_name} check (campaign_date >= %(lo)s::date and campaign_date < %(hi)s::date),
    constraint {hash_name} check (satisfies_hash_partition(%(date_part)s::regclass::oid, %(shards)s, %(shard)s, user_id))
)
