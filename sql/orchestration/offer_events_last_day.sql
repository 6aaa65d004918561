-- Outcome events recorded in the day before the night's reference time (the feedback task's count).
select count(*)
from recsys.offer_events
where event_at >= %(reference_at)s - interval '1 day' and event_at < %(reference_at)s
