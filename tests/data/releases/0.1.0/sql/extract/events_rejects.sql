-- Record every problem of every rejected staged event (one row per column that failed).
-- Params: load_id, file_name.

insert into recsys.load_rejects (load_id, file_name, sheet, row_number, column_name, value, reason)
select
    %(load_id)s as load_id,
    %(file_name)s as file_name,
    'events' as sheet,
    c.row_number,
    p.column_name,
    left(p.value, 200) as value,
    p.reason
from pg_temp.events_checked as c
cross join
    lateral (
        values
        ('event_id', c.event_id, c.event_id_reason),
        ('user_id', c.user_id, c.user_id_reason),
        ('session_id', c.session_id, c.session_id_reason),
        ('timestamp', c.event_ts, c.timestamp_reason),
        ('action', c.action, c.action_reason),
        ('amount', c.amount, c.amount_reason),
        ('discount_used', c.discount_used, c.discount_used_reason),
        ('free_shipping_used', c.free_shipping_used, c.free_shipping_used_reason)
    ) as p (column_name, value, reason)
where c.is_rejected and p.reason is not null
