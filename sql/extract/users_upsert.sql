-- Upsert the valid staged users. Within the file the row with the newest updated_at wins (rows
-- without one lose to rows with one; ties go to the later row). Against the table: the newer
-- updated_at wins when both rows have one, else this (later) load wins. Missing consent = none.
-- A header field dropped at validation (a line break in it) is stored as null.
-- A user sent again with every value as stored is left as it is. Params: load_id. Returns the
-- number of users inserted or changed.

with latest as (
    select distinct on (user_id_v) *
    from pg_temp.users_checked
    where not is_rejected
    order by user_id_v asc, updated_at_v desc nulls last, row_number desc
),

upserted as (
    insert into recsys.users as u (
        user_id, email_opt_in, sms_opt_in, push_opt_in, email, phone, push_token, timezone,
        first_name, updated_at, load_id, loaded_at
    )
    select
        l.user_id_v,
        coalesce(l.email_opt_in_v, false) as email_opt_in,
        coalesce(l.sms_opt_in_v, false) as sms_opt_in,
        coalesce(l.push_opt_in_v, false) as push_opt_in,
        l.email_v,
        l.phone_v,
        l.push_token_v,
        l.timezone_v,
        l.first_name_v,
        l.updated_at_v,
        %(load_id)s,
        clock_timestamp() as loaded_at
    from latest as l
    on conflict (user_id) do update
        set
            email_opt_in = excluded.email_opt_in,
            sms_opt_in = excluded.sms_opt_in,
            push_opt_in = excluded.push_opt_in,
            email = excluded.email,
            phone = excluded.phone,
            push_token = excluded.push_token,
            timezone = excluded.timezone,
            first_name = excluded.first_name,
            updated_at = excluded.updated_at,
            load_id = excluded.load_id,
            loaded_at = excluded.loaded_at
        where
        (u.updated_at is null or excluded.updated_at is null or excluded.updated_at >= u.updated_at)
        -- a row sent again as it is stays as it was (no new row version, its load_id and loaded_at
        -- kept): it counts as already present
        and (
            u.email_opt_in, u.sms_opt_in, u.push_opt_in, u.email, u.phone, u.push_token, u.timezone,
            u.first_name, u.updated_at
        ) is distinct from (
            excluded.email_opt_in, excluded.sms_opt_in, excluded.push_opt_in, excluded.email, excluded.phone,
            excluded.push_token, excluded.timezone, excluded.first_name, excluded.updated_at
        )
    returning 1
)

select count(*) from upserted
