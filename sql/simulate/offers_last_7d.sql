-- offers each user got in the 7 nights before the night: past campaigns and the system's own
with recent as (
    select user_id from recsys.offer_history
    where sent_at >= %(lo)s::date and sent_at < %(night)s::date
    union all
    select user_id from recsys.campaign_offers
    where campaign_date >= %(lo)s and campaign_date < %(night)s and status = 'sent'
)

select
    user_id,
    count(*) as n
from recent
where user_id = any(%(ids)s)
group by user_id
