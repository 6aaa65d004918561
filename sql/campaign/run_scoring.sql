update recsys.campaign_runs set state = 'scoring', message = null
where run_id = %(run_id)s
