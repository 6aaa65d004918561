-- Offers of a run per channel, for the report.
select
    channel,
    count(*) as n
from recsys.campaign_offers
where run_id = %(run_id)s
group by channel
