-- Validate the staged users of one file. Reads pg_temp.stage_users, writes pg_temp.users_checked.
-- Params: reference_at.
-- Text that ends up in message headers (the first name in a subject, the addresses in To) must
-- not hold line breaks or other control characters: such a value is dropped (stored as null, with
-- a reject naming it) but the row is still loaded, because the user's consent matters more than
-- one field. Those reasons (`*_dropped`) do not make the row rejected.
-- The `offset 0` levels keep each parsed value computed once per row and streamed upwards, instead of
-- materialising every row (about a third of the check's time on 1M users); values are cleaned as
-- events_check.sql cleans them (recsys.trim_to_null: nullif(btrim(v), '') without the copy when
-- there is nothing to trim).

create temp table users_checked on commit drop as
with trimmed as (
    select
        row_number,
        recsys.trim_to_null(raw_user_id) as user_id,
        recsys.trim_to_null(raw_email_opt_in) as email_opt_in,
        recsys.trim_to_null(raw_sms_opt_in) as sms_opt_in,
        recsys.trim_to_null(raw_push_opt_in) as push_opt_in,
        recsys.trim_to_null(raw_email) as email,
        recsys.trim_to_null(raw_phone) as phone,
        recsys.trim_to_null(raw_push_token) as push_token,
        recsys.trim_to_null(raw_timezone) as timezone,
        recsys.trim_to_null(raw_first_name) as first_name,
        recsys.trim_to_null(raw_updated_at) as updated_at
    from pg_temp.stage_users
    offset 0
),

typed as (
    select
        t.*,
        recsys.parse_bigint(t.user_id) as user_id_v,
        recsys.parse_bool(t.email_opt_in) as email_opt_in_v,
        recsys.parse_bool(t.sms_opt_in) as sms_opt_in_v,
        recsys.parse_bool(t.push_opt_in) as push_opt_in_v,
        recsys.parse_iso_timestamp(t.updated_at) as updated_at_v,
        coalesce(t.timezone, 'UTC') as timezone_v,
        t.email ~ '[[:cntrl:]\u0085\u2028\u2029]' as email_has_control,
        t.phone ~ '[[:cntrl:]\u0085\u2028\u2029]' as phone_has_control,
        t.push_token ~ '[[:cntrl:]\u0085\u2028\u2029]' as push_token_has_control,
        t.first_name ~ '[[:cntrl:]\u0085\u2028\u2029]' as first_name_has_control,
        t.timezone is null or exists (
            select from pg_catalog.pg_timezone_names as z
            where z.name = t.timezone
        ) as timezone_known
    from trimmed as t
    offset 0
),

reasons as (
    select
        *,
        case
            when user_id is null then 'required value is missing'
            when user_id_v is null then 'expected a whole number'
        end as user_id_reason,
        case when email_opt_in is not null and email_opt_in_v is null then 'expected true or false' end
            as email_opt_in_reason,
        case when sms_opt_in is not null and sms_opt_in_v is null then 'expected true or false' end
            as sms_opt_in_reason,
        case when push_opt_in is not null and push_opt_in_v is null then 'expected true or false' end
            as push_opt_in_reason,
        case
            when email_has_control then null  -- dropped below, the row kept
            when email is not null and email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then 'not an email address'
        end as email_reason,
        case when not timezone_known then 'unknown time zone: expected an IANA name such as Europe/Berlin' end
            as timezone_reason,
        case
            when updated_at is not null and updated_at_v is null
                then 'expected an ISO 8601 timestamp such as 2026-05-01T13:45:00Z'
            when updated_at_v > %(reference_at)s then 'timestamp is in the future (after the load''s reference time)'
        end as updated_at_reason,
        case when email_has_control then 'line break or control character: email dropped, the user loaded' end
            as email_dropped,
        case when phone_has_control then 'line break or control character: phone dropped, the user loaded' end
            as phone_dropped,
        case
            when push_token_has_control then 'line break or control character: push_token dropped, the user loaded'
        end as push_token_dropped,
        case
            when first_name_has_control then 'line break or control character: first_name dropped, the user loaded'
        end as first_name_dropped
    from typed
),

final as (
    select
        *,
        coalesce(
            user_id_reason, email_opt_in_reason, sms_opt_in_reason, push_opt_in_reason, email_reason,
            timezone_reason, updated_at_reason
        ) is not null as is_rejected,
        coalesce(email_dropped, phone_dropped, push_token_dropped, first_name_dropped) is not null
            as has_dropped_fields,
        case when email_dropped is null then email end as email_v,
        case when phone_dropped is null then phone end as phone_v,
        case when push_token_dropped is null then push_token end as push_token_v,
        case when first_name_dropped is null then first_name end as first_name_v
    from reasons
)

select * from final
