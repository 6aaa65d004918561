-- The Campaigns page: one campaign run as v_campaign_runs shows it. Params: run_id.
select * from recsys.v_campaign_runs
where run_id = %(run_id)s
