-- A step of a date's feature build (recsys.data.features), one per shard of users: each user's
-- interest per category in the feature window, with the category's population share pi_k
-- ({pop}, category_population.sql; 0 for a category nobody viewed). Read by user_stats.sql (the top
-- category and the Dirichlet prior's sums) and user_features.sql (the posterior's largest share).
--
-- Parameters: as_of, window_days, recency_cap_days (user_features.sql), and the shard's users:
-- user_from <= user_id < user_to (null: no bound).
--
-- Interest per category: views + 3 add_to_carts + 5 purchases; events without a category are ignored.
-- Collation "C" compares bytes: the same groups as any deterministic collation, sorted faster, and
-- category ties go by code point whatever the database locale. Rows in (user, category) order.

select
    s.user_id,
    s.product_category,
    s.category_score,
    s.category_views,
    coalesce(c.share, 0) as share
from (
    select
        e.user_id,
        e.product_category collate "C" as product_category,  -- noqa: RF03
        sum(
            case e.action
                when 'view' then 1
                when 'add_to_cart' then 3
                when 'purchase' then 5
            end
        ) as category_score,
        count(*) filter (where e.action = 'view') as category_views
    from recsys.behavior_events as e
    where
        e.event_at
        >= (%(as_of)s::date - least(%(window_days)s, %(recency_cap_days)s))::timestamp at time zone 'UTC'
        and e.event_at < %(as_of)s::date::timestamp at time zone 'UTC'
        and e.product_category is not null
        and (%(user_from)s::bigint is null or e.user_id >= %(user_from)s::bigint)
        and (%(user_to)s::bigint is null or e.user_id < %(user_to)s::bigint)
    group by e.user_id, e.product_category collate "C"  -- noqa: RF03
) as s
left join {pop} as c on s.product_category = c.product_category
order by s.user_id, s.product_category
