-- Record every problem of every rejected staged feedback row. Params: load_id, file_name.

insert into recsys.load_rejects (load_id, file_name, sheet, row_number, column_name, value, reason)
select
    %(load_id)s as load_id,
    %(file_name)s as file_name,
    'feedback' as sheet,
    c.row_number,
    p.column_name,
    left(p.value, 200) as value,
    p.reason
from pg_temp.feedback_checked as c
cross join
    lateral (
        values
        ('offer_id', c.offer_id, c.offer_id_reason),
        ('event', c.event, c.event_reason),
        ('event_at', c.event_at, c.event_at_reason),
        ('revenue', c.revenue, c.revenue_reason)
    ) as p (column_name, value, reason)
where c.is_rejected and p.reason is not null
