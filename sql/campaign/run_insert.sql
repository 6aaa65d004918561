insert into recsys.campaign_runs (
    run_id, campaign_date, model_version, dry_run, shard_count, features_as_of, settings
)
values (%(run_id)s, %(day)s, %(model)s, %(dry_run)s, %(shards)s, %(day)s, %(settings)s)
on conflict (run_id) do nothing
