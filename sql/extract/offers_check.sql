-- Validate the staged past offers of one file. Reads pg_temp.stage_offers, writes
-- pg_temp.offers_checked. Params: reference_at.
-- Cleaning takes the events check's shortcuts (events_check.sql): recsys.trim_to_null, and an offer
-- type, channel or timing already spelt in lower case skips lower(). The `offset 0` levels keep each
-- cleaned and parsed value computed once per row and streamed upwards, as in users_check.sql, instead
-- of materialising every row between them.

create temp table offers_checked on commit drop as
with trimmed as (
    select
        row_number,
        recsys.trim_to_null(raw_offer_id) as offer_id,
        recsys.trim_to_null(raw_user_id) as user_id,
        recsys.trim_to_null(raw_sent_at) as sent_at,
        case
            when raw_offer_type in ('discount', 'free_shipping', 'recommendation', 'bundle') then raw_offer_type
            else nullif(lower(btrim(raw_offer_type)), '')
        end as offer_type,
        recsys.trim_to_null(raw_offer_value) as offer_value,
        case
            when raw_channel in ('email', 'sms', 'push') then raw_channel
            else nullif(lower(btrim(raw_channel)), '')
        end as channel,
        case
            when raw_timing in ('immediate', 'delay_1hour', 'delay_6hours') then raw_timing
            else nullif(lower(btrim(raw_timing)), '')
        end as timing,
        recsys.trim_to_null(raw_propensity) as propensity,
        recsys.trim_to_null(raw_opened) as opened,
        recsys.trim_to_null(raw_clicked) as clicked,
        recsys.trim_to_null(raw_converted) as converted,
        recsys.trim_to_null(raw_revenue) as revenue
    from pg_temp.stage_offers
    -- keeps the cleaned values computed once per row, so that the parsers below, which read their
    -- value more than once, are inlined on a column instead of being called
    offset 0
),

typed as (
    select
        *,
        recsys.parse_bigint(user_id) as user_id_v,
        recsys.parse_iso_timestamp(sent_at) as sent_at_v,
        recsys.parse_numeric(offer_value) as offer_value_v,
        recsys.parse_numeric(propensity) as propensity_v,
        recsys.parse_bool(opened) as opened_v,
        recsys.parse_bool(clicked) as clicked_v,
        recsys.parse_bool(converted) as converted_v,
        recsys.parse_numeric(revenue) as revenue_v
    from trimmed
    offset 0
),

reasons as (
    select
        *,
        case
            when offer_id is null then 'required value is missing'
            when length(offer_id) > 200 then 'offer_id is longer than 200 characters'
        end as offer_id_reason,
        case
            when user_id is null then 'required value is missing'
            when user_id_v is null then 'expected a whole number'
        end as user_id_reason,
        case
            when sent_at is null then 'required value is missing'
            when sent_at_v is null then 'expected an ISO 8601 timestamp such as 2026-05-01T13:45:00Z'
            when sent_at_v > %(reference_at)s then 'timestamp is in the future (after the load''s reference time)'
        end as sent_at_reason,
        case
            when offer_type is null then 'required value is missing'
            when offer_type not in ('discount', 'free_shipping', 'recommendation', 'bundle')
                then 'unknown offer_type: expected discount, free_shipping, recommendation or bundle'
        end as offer_type_reason,
        case
            when offer_value is null then 'required value is missing'
            when offer_value_v is null then 'expected a number'
            -- bounds on the value rounded to cents, as numeric(12, 2) stores it
            when offer_value_v < 0.005 or offer_value_v >= 9999999999.995
                then 'offer_value must be > 0 and < 1e10 once rounded to cents'
        end as offer_value_reason,
        case
            when channel is null then 'required value is missing'
            when channel not in ('email', 'sms', 'push') then 'unknown channel: expected email, sms or push'
        end as channel_reason,
        case
            when timing is null then 'required value is missing'
            when timing not in ('immediate', 'delay_1hour', 'delay_6hours')
                then 'unknown timing: expected immediate, delay_1hour or delay_6hours'
        end as timing_reason,
        case
            when propensity is not null and propensity_v is null then 'expected a number'
            when propensity_v <= 0 or propensity_v > 1 then 'propensity must be in (0, 1]'
        end as propensity_reason,
        case when opened is not null and opened_v is null then 'expected true or false' end as opened_reason,
        case when clicked is not null and clicked_v is null then 'expected true or false' end as clicked_reason,
        case when converted is not null and converted_v is null then 'expected true or false' end
            as converted_reason,
        case
            when revenue is not null and revenue_v is null then 'expected a number'
            when revenue_v < 0 or revenue_v >= 999999999999.995 then 'revenue must be >= 0 (and < 1e12)'
        end as revenue_reason
    from typed
),

final as (
    select
        *,
        coalesce(
            offer_id_reason, user_id_reason, sent_at_reason, offer_type_reason, offer_value_reason,
            channel_reason, timing_reason, propensity_reason, opened_reason, clicked_reason,
            converted_reason, revenue_reason
        ) is not null as is_rejected
    from reasons
)

select * from final
