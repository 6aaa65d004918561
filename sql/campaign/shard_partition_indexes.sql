-- a shard's own table (part), filled: the indexes (and unique or primary-key constraints) of the
-- date's partition, so that ATTACH adopts them instead of building them
select recsys.build_partition_indexes(%(part)s::regclass, %(date_part)s::regclass)
