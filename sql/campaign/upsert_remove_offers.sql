-- a re-run replaces: the shard's still-scheduled offers for users who get none now (skipped, held out
-- or rested) go
delete from recsys.campaign_offers as o
where
    o.campaign_date = %(day)s and o.status = 'scheduled'
    and (%(shards)s = 1 or recsys.in_campaign_shard(o.user_id, %(shards)s, %(shard)s))
    and not exists (
        select from stage_offers as s
        inner join stage_actions as a on s.action_id = a.action_id
        where s.user_id = o.user_id and not s.is_holdout and not a.is_rest
    )
