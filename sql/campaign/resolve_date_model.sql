-- the model the date's last recorded run scored with
select model_version from recsys.campaign_runs
where campaign_date = %(day)s and model_version is not null and not dry_run and state <> 'failed'
order by created_at desc
limit 1
