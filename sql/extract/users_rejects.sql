-- Record every problem of every rejected staged user, and every field dropped from a loaded one
-- (a header field with a line break). Params: load_id, file_name.

insert into recsys.load_rejects (load_id, file_name, sheet, row_number, column_name, value, reason)
select
    %(load_id)s as load_id,
    %(file_name)s as file_name,
    'users' as sheet,
    c.row_number,
    p.column_name,
    left(p.value, 200) as value,
    p.reason
from pg_temp.users_checked as c
cross join
    lateral (
        values
        ('user_id', c.user_id, c.user_id_reason),
        ('email_opt_in', c.email_opt_in, c.email_opt_in_reason),
        ('sms_opt_in', c.sms_opt_in, c.sms_opt_in_reason),
        ('push_opt_in', c.push_opt_in, c.push_opt_in_reason),
        ('email', c.email, c.email_reason),
        ('timezone', c.timezone, c.timezone_reason),
        ('updated_at', c.updated_at, c.updated_at_reason),
        ('email', c.email, c.email_dropped),
        ('phone', c.phone, c.phone_dropped),
        ('push_token', c.push_token, c.push_token_dropped),
        ('first_name', c.first_name, c.first_name_dropped)
    ) as p (column_name, value, reason)
where (c.is_rejected or c.has_dropped_fields) and p.reason is not null
