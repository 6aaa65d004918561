-- Validate the staged events of one file: type every column and name each column's problem.
-- Reads pg_temp.stage_events (all text, as read from the file), writes pg_temp.events_checked.
-- Params: reference_at (timestamps after it are in the future), oldest_at (timestamps before it
-- are past the event retention window: they would be dropped at once, and a mistyped year would
-- otherwise create a partition for every month back to it).
-- The nested subqueries carry `offset 0` so that PostgreSQL computes each parsed value once per
-- row and streams it upwards, instead of materialising every level or re-parsing per use.
-- Cleaning a value costs more than parsing it, so the common value takes a shortcut with the same
-- result: recsys.trim_to_null skips btrim when there are no spaces to trim, and an action or
-- channel already spelt in lower case skips lower(), whose locale-aware conversion is slow.

create temp table events_checked on commit drop as
with final as (
    select
        r.*,
        coalesce(
            r.event_id_reason, r.user_id_reason, r.session_id_reason, r.timestamp_reason, r.action_reason, r.amount_reason,
            r.discount_used_reason, r.free_shipping_used_reason
        ) is not null as is_rejected
    from (
        select
            t.*,
            t.event_id as event_id_v,
            case when length(t.event_id) > 200 then 'event_id is longer than 200 characters' end as event_id_reason,
            case
                when t.user_id is null then 'required value is missing'
                when t.user_id_v is null then 'expected a whole number'
            end as user_id_reason,
            case when t.session_id is null then 'required value is missing' end as session_id_reason,
            case
                when t.event_ts is null then 'required value is missing'
                when t.event_at_v is null then 'expected an ISO 8601 timestamp such as 2026-05-01T13:45:00Z'
                when t.event_at_v > %(reference_at)s
                    then 'timestamp is in the future (after the load''s reference time)'
                when t.event_at_v < %(oldest_at)s
                    then 'timestamp is older than the event retention window (RECSYS_EVENT_RETENTION_DAYS)'
            end as timestamp_reason,
            case
                when t.action is null then 'required value is missing'
                when t.action not in ('view', 'add_to_cart', 'purchase')
                    then 'unknown action: expected view, add_to_cart or purchase'
            end as action_reason,
            case
                when t.amount is null and t.action = 'purchase' then 'a purchase needs an amount'
                when t.amount is not null and t.amount_v is null then 'expected a number'
                when t.amount_v < 0 then 'amount must be >= 0'
                -- bound on the value rounded to cents, as numeric(14, 2) stores it
                when t.amount_v >= 999999999999.995 then 'amount is implausibly large (>= 1e12)'
            end as amount_reason,
            case
                when t.discount_used is not null and t.discount_used_v is null then 'expected true or false'
            end as discount_used_reason,
            case
                when t.free_shipping_used is not null and t.free_shipping_used_v is null
                    then 'expected true or false'
            end as free_shipping_used_reason
        from (
            select
                s.*,
                recsys.parse_bigint(s.user_id) as user_id_v,
                recsys.parse_iso_timestamp(s.event_ts) as event_at_v,
                recsys.parse_numeric(s.amount) as amount_v,
                recsys.parse_bool(s.discount_used) as discount_used_v,
                recsys.parse_bool(s.free_shipping_used) as free_shipping_used_v
            from (
                select
                    row_number,
                    recsys.trim_to_null(raw_event_id) as event_id,
                    recsys.trim_to_null(raw_user_id) as user_id,
                    recsys.trim_to_null(raw_session_id) as session_id,
                    recsys.trim_to_null(raw_timestamp) as event_ts,
                    case
                        when raw_action in ('view', 'add_to_cart', 'purchase') then raw_action
                        else nullif(lower(btrim(raw_action)), '')
                    end as action,
                    recsys.trim_to_null(raw_product_category) as product_category,
                    case
                        when raw_channel in ('web', 'app', 'email', 'sms', 'push') then raw_channel
                        else nullif(lower(btrim(raw_channel)), '')
                    end as channel,
                    recsys.trim_to_null(raw_amount) as amount,
                    recsys.trim_to_null(raw_discount_used) as discount_used,
                    recsys.trim_to_null(raw_free_shipping_used) as free_shipping_used
                from pg_temp.stage_events
                offset 0
            ) as s
            offset 0
        ) as t
        offset 0
    ) as r
)

select * from final
