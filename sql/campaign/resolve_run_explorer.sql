-- the exploration source (a model version, or 'uniform') the run recorded when it started; null
-- for a new run or one started before exploration sources were recorded
select settings ->> 'exploration_source' from recsys.campaign_runs
where run_id = %(run_id)s
