-- consent with an address per channel, as scoring reads it
select
    u.user_id,
    coalesce(u.email_opt_in and u.email is not null, false) as email,
    coalesce(u.sms_opt_in and u.phone is not null, false) as sms,
    coalesce(u.push_opt_in and u.push_token is not null, false) as push
from recsys.users as u
where u.user_id = any(%(ids)s)
