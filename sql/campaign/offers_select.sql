-- the staged decisions as campaign_offers rows: action, message with the first name filled in
-- (or the fallback), schedule; the offers placeholder of offers_insert.sql and offers_upsert.sql
with staged as (
    select
        s.user_id,
        s.action_id,
        s.propensity,
        s.is_exploration,
        a.offer_type,
        a.offer_value,
        a.value_unit,
        a.channel,
        a.timing,
        a.category_offer,
        m.subject,
        m.body,
        m.is_html,
        m.max_chars,
        m.fallback_subject,
        m.fallback_body,
        m.marker_count,
        m.base_chars,
        c.name as top_category,
        g.name as segment,
        sch.scheduled_at,
        coalesce(v.tz, 'UTC') as tz,
        nullif(btrim(u.first_name), '') as first_name
    from stage_offers as s
    inner join stage_actions as a on s.action_id = a.action_id
    inner join stage_messages as m on s.message_id = m.message_id
    inner join stage_codes as c on c.kind = 'category' and s.category_code = c.code
    inner join stage_codes as g on g.kind = 'segment' and s.segment_code = g.code
    left join recsys.users as u on s.user_id = u.user_id
    left join stage_timezones as v on u.timezone = v.tz
    left join stage_best_times as b on s.user_id = b.user_id
    inner join stage_schedule as sch
        on
            coalesce(v.tz, 'UTC') = sch.tz and s.action_id = sch.action_id
            and coalesce(b.send_time, %(send_time)s::time) = sch.send_time
    where not s.is_holdout and not a.is_rest
),

named as (
    select
        *,
        case
            when first_name is null then null
            when max_chars is null then first_name
            when
                first_name ~ %(gsm_pattern)s
                and base_chars + marker_count * char_length(first_name) <= max_chars
                then first_name
        end as usable_name
    from staged
),

final as (
    select
        %(run_id)s as run_id,
        %(day)s::date as campaign_date,
        user_id,
        action_id,
        offer_type,
        offer_value,
        value_unit,
        channel,
        timing,
        scheduled_at,
        scheduled_at + make_interval(hours => %(validity)s) as expires_at,
        %(max_attempts)s as max_attempts,
        %(model)s as model_version,
        propensity,
        is_exploration,
        %(day)s::date as features_as_of,
        segment,
        case when category_offer then top_category end as product_category,
        case
            when usable_name is null then fallback_subject
            -- subjects and titles are plain text, never html
            else replace(subject, %(marker)s, usable_name)
        end as subject,
        case
            when usable_name is null then fallback_body
            when is_html then replace(body, %(marker)s, recsys.html_escape(usable_name))
            else replace(body, %(marker)s, usable_name)
        end as body
    from named
)

select
    run_id,
    campaign_date,
    user_id,
    action_id,
    offer_type,
    offer_value,
    value_unit,
    product_category,
    channel,
    timing,
    scheduled_at,
    expires_at,
    max_attempts,
    subject,
    body,
    model_version,
    propensity,
    is_exploration,
    features_as_of,
    segment
from final
