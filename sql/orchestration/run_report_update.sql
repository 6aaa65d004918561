-- Store the night's report on its run (writing it again replaces it).
update recsys.campaign_runs
set report = %(report)s::jsonb
where run_id = %(run_id)s
returning state, dry_run, model_version, counts
