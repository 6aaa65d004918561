-- the local send time of every best_hour offer, from the user's features of the date: filled only
-- when the catalog has the best_hour timing (empty otherwise, and the offers keep the send time)
insert into stage_best_times
select
    s.user_id,
    recsys.best_send_time(
        f.preferred_local_hour, f.preferred_hour_certainty, %(min_certainty)s, %(best_default)s
    ) as send_time
from stage_offers as s
inner join stage_actions as a on s.action_id = a.action_id
left join recsys.user_features as f on f.as_of = %(day)s and s.user_id = f.user_id
where a.timing = 'best_hour' and not s.is_holdout
