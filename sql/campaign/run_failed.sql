update recsys.campaign_runs set state = 'failed', message = %(message)s
where run_id = %(run_id)s and state = 'scoring'
