-- The Campaigns page: one run's v_campaign_summary groups summed per channel, offer type and timing
-- (over segments), with the treated and holdout buyers behind the purchase rates, so that the page
-- can sum them again over the whole run for its lift. Params: run_id.
select
    channel,
    offer_type,
    timing,
    coalesce(sum(offers), 0)::bigint as offers,
    coalesce(sum(sent), 0)::bigint as sent,
    coalesce(sum(delivered), 0)::bigint as delivered,
    coalesce(sum(opened), 0)::bigint as opened,
    coalesce(sum(clicked), 0)::bigint as clicked,
    coalesce(sum(converted), 0)::bigint as converted,
    coalesce(sum(revenue), 0)::double precision as revenue,
    coalesce(sum(treated_users), 0)::bigint as treated_users,
    coalesce(sum(holdout_users), 0)::bigint as holdout_users,
    coalesce(sum(coalesce(treated_purchase_rate, 0) * treated_users), 0)::double precision as treated_buyers,
    coalesce(sum(coalesce(holdout_purchase_rate, 0) * holdout_users), 0)::double precision as holdout_buyers
from recsys.v_campaign_summary
where run_id = %(run_id)s
group by channel, offer_type, timing
order by channel, offer_type, timing
