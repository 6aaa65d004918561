select model_version from recsys.campaign_runs
where run_id = %(run_id)s
