-- Validate the staged feedback rows of one file (outcomes of the system's own offers). Reads
-- pg_temp.stage_feedback, writes pg_temp.feedback_checked. Params: reference_at.
-- The bounds of record_offer_event apply: the offer must have been claimed by a sender, and
-- event_at lies between its first claim and now(), each side widened by offer_event_clock_skew().

create temp table feedback_checked on commit drop as
with trimmed as (
    select
        row_number,
        nullif(btrim(raw_offer_id), '') as offer_id,
        nullif(lower(btrim(raw_event)), '') as event,
        nullif(btrim(raw_event_at), '') as event_at,
        nullif(btrim(raw_revenue), '') as revenue
    from pg_temp.stage_feedback
),

typed as materialized (
    select
        *,
        recsys.parse_bigint(offer_id) as offer_id_v,
        recsys.parse_iso_timestamp(event_at) as event_at_v,
        recsys.parse_numeric(revenue) as revenue_v
    from trimmed
),

known as (
    select
        t.*,
        o.offer_id is not null as is_known_offer,
        o.first_claimed_at
    from typed as t
    left join lateral (
        select
            c.offer_id,
            c.first_claimed_at
        from recsys.campaign_offers as c
        where c.offer_id = t.offer_id_v
        limit 1
    ) as o on true
),

reasons as (
    select
        *,
        case
            when offer_id is null then 'required value is missing'
            when offer_id_v is null then 'expected a whole number'
            when not is_known_offer then 'unknown offer_id: no campaign offer has it'
            when first_claimed_at is null then 'offer was never claimed by a sender: no event can have happened to it'
        end as offer_id_reason,
        case
            when event is null then 'required value is missing'
            when event not in ('delivered', 'opened', 'clicked', 'converted', 'unsubscribed', 'bounced')
                then 'unknown event: expected delivered, opened, clicked, converted, unsubscribed or bounced'
        end as event_reason,
        case
            when event_at is null then 'required value is missing'
            when event_at_v is null then 'expected an ISO 8601 timestamp such as 2026-05-01T13:45:00Z'
            when event_at_v > %(reference_at)s then 'timestamp is in the future (after the load''s reference time)'
            when event_at_v > now() + recsys.offer_event_clock_skew()
                then
                    'timestamp is in the future (after now plus the '
                    || extract(epoch from recsys.offer_event_clock_skew())::integer / 60 || ' minute clock skew)'
            when event_at_v < first_claimed_at - recsys.offer_event_clock_skew()
                then
                    'before the offer''s first claim at '
                    || to_char(first_claimed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                    || ' (less the ' || extract(epoch from recsys.offer_event_clock_skew())::integer / 60
                    || ' minute clock skew)'
        end as event_at_reason,
        case
            when revenue is not null and revenue_v is null then 'expected a number'
            when revenue_v < 0 or revenue_v >= 999999999999.995 then 'revenue must be >= 0 (and < 1e12)'
        end as revenue_reason
    from known
),

final as (
    select
        *,
        coalesce(offer_id_reason, event_reason, event_at_reason, revenue_reason) is not null as is_rejected
    from reasons
)

select * from final
