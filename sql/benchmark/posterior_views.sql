-- Product views per user and category before the as-of moment, for the posterior ceiling's
-- category affinities (recsys.benchmark.posterior).
with final as (
    select
        e.user_id,
        e.product_category,
        count(*) as views
    from recsys.behavior_events as e
    where
        e.action = 'view'
        and e.product_category is not null
        and e.event_at < %(as_of)s::timestamptz
    group by e.user_id, e.product_category
)

select * from final
