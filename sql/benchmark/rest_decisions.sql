-- The policy's own decisions (offer or rest, exploration draws left out) of every night from
-- %(first_night)s on, each with the user's offers of the 7 nights before it, for the rests
-- benchmark (bench/bench_rests.py).
with decided as (
    select
        d.campaign_date,
        d.user_id,
        d.decision,
        d.is_exploration
    from recsys.campaign_decisions as d
    where d.decision in ('offer', 'rest')
),

history as (
    select
        campaign_date,
        user_id,
        decision,
        is_exploration,
        count(*) filter (where decision = 'offer') over (
            partition by user_id order by campaign_date
            range between interval '7 days' preceding and interval '1 day' preceding
        ) as offers_last_7_nights
    from decided
),

final as (
    select
        campaign_date,
        user_id,
        decision = 'rest' as rested,
        offers_last_7_nights
    from history
    where
        not is_exploration
        and campaign_date >= %(first_night)s
)

select * from final
order by campaign_date, user_id
