-- offers each user got on each of the nights before the first simulated night: past campaigns and
-- the system's own (the fatigue the reference loops start from)
with recent as (
    select
        user_id,
        sent_at::date as night
    from recsys.offer_history
    where sent_at >= %(lo)s::date and sent_at < %(night)s::date
    union all
    select
        user_id,
        campaign_date as night
    from recsys.campaign_offers
    where campaign_date >= %(lo)s and campaign_date < %(night)s and status = 'sent'
)

select
    user_id,
    night,
    count(*) as n
from recent
where user_id = any(%(ids)s)
group by user_id, night
