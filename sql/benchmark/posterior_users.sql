-- Users with their consent per channel and time zone, for the posterior ceiling
-- (recsys.benchmark.posterior).
with final as (
    select
        u.user_id,
        u.email_opt_in,
        u.sms_opt_in,
        u.push_opt_in,
        u.timezone
    from recsys.users as u
)

select * from final
