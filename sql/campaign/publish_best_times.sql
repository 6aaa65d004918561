-- the local send time of each still-scheduled best_hour offer of the run, from the features it was
-- scored with (the same rule as stage_best_times.sql); run only when the run's catalog has best_hour.
-- Keyed by user: a date holds at most one offer per user (campaign_offers_one_per_user)
insert into publish_best_times
select
    o.user_id,
    recsys.best_send_time(
        f.preferred_local_hour, f.preferred_hour_certainty, %(min_certainty)s, %(best_default)s
    ) as send_time
from recsys.campaign_offers as o
left join recsys.user_features as f on o.features_as_of = f.as_of and o.user_id = f.user_id
where
    o.run_id = %(run_id)s and o.campaign_date = %(day)s and o.status = 'scheduled'
    and o.timing = 'best_hour'
