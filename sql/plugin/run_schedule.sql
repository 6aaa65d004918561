-- The Campaigns page: a run's scheduled-time histogram, offers (and sent) per UTC hour and channel.
-- Params: run_id.
select
    scheduled_hour,
    channel,
    offers::bigint as offers,
    sent::bigint as sent
from recsys.v_campaign_schedule
where run_id = %(run_id)s
order by scheduled_hour, channel
