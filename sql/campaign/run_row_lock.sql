-- the run's row lock serialises its shards' aggregation
select 1 from recsys.campaign_runs
where run_id = %(run_id)s
for update
