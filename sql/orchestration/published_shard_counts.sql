-- The counts of a done shard of a published run (a cleared shard of it is left as it is).
select s.counts
from recsys.campaign_runs as r
inner join recsys.campaign_run_shards as s on r.run_id = s.run_id
where r.run_id = %(run_id)s and r.state = 'published' and s.shard = %(shard)s and s.state = 'done'
