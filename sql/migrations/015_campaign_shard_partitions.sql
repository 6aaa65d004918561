-- 015: a sharded night writes each shard into its own sub-partition (issue 14). A campaign date
-- scored in N shards gets its campaign_offers and campaign_decisions partitions sub-partitioned by
-- hash of user_id (modulus N); each shard fills its remainder's table bare and attaches it, one
-- sorted build per index, instead of upserting a million rows through the date's indexes.
--
-- For that, a shard's users must be exactly one hash sub-partition's, so the shard of a user is
-- now PostgreSQL's hash partitioning of user_id (recsys.in_campaign_shard), read off this table
-- (it holds no rows). Earlier it was a hash of the user id's text: a date whose sharded run
-- started before this migration and finishes after it is re-scored whole (shards = 1) or under a
-- new run id; every completed run is unaffected.

create table recsys.campaign_shard_hash (
    user_id bigint not null
) partition by hash (user_id);

comment on table recsys.campaign_shard_hash is
'Holds no rows: its hash partitioning of user_id defines the shard of a user in a sharded campaign run '
'(recsys.in_campaign_shard), the same as the hash sub-partitions of a sharded campaign date.';
comment on column recsys.campaign_shard_hash.user_id is 'The key hashed: a user id.';

-- the date-partition helpers take the run's shard count now (sql/functions/40_campaign.sql)
drop function if exists recsys.ensure_campaign_partition(date);
drop function if exists recsys.ensure_decisions_partition(date);
