-- offered users whose time zone PostgreSQL does not know (scheduled in UTC)
select count(*) from stage_offers as s
inner join stage_actions as a on s.action_id = a.action_id
inner join recsys.users as u on s.user_id = u.user_id
where not s.is_holdout and not a.is_rest and u.timezone not in (select tz from stage_timezones)
