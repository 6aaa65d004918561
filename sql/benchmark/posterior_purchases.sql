-- Purchases per user before the as-of moment, for the posterior ceiling (recsys.benchmark.posterior):
-- their count, the sum of the log order values, and how many used a discount or free shipping. The
-- caller takes out the purchases of converted offers (their values and flags come from the offer).
with final as (
    select
        e.user_id,
        count(*) as purchases,
        sum(ln(greatest(e.amount, 0.01)))::double precision as sum_log_amount,
        count(*) filter (where e.discount_used) as discount_used,
        count(*) filter (where e.free_shipping_used) as free_shipping_used
    from recsys.behavior_events as e
    where e.action = 'purchase' and e.event_at < %(as_of)s::timestamptz
    group by e.user_id
)

select * from final
