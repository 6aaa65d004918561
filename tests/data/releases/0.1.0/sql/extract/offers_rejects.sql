-- Record every problem of every rejected staged past offer. Params: load_id, file_name.

insert into recsys.load_rejects (load_id, file_name, sheet, row_number, column_name, value, reason)
select
    %(load_id)s as load_id,
    %(file_name)s as file_name,
    'offers' as sheet,
    c.row_number,
    p.column_name,
    left(p.value, 200) as value,
    p.reason
from pg_temp.offers_checked as c
cross join
    lateral (
        values
        ('offer_id', c.offer_id, c.offer_id_reason),
        ('user_id', c.user_id, c.user_id_reason),
        ('sent_at', c.sent_at, c.sent_at_reason),
        ('offer_type', c.offer_type, c.offer_type_reason),
        ('offer_value', c.offer_value, c.offer_value_reason),
        ('channel', c.channel, c.channel_reason),
        ('timing', c.timing, c.timing_reason),
        ('propensity', c.propensity, c.propensity_reason),
        ('opened', c.opened, c.opened_reason),
        ('clicked', c.clicked, c.clicked_reason),
        ('converted', c.converted, c.converted_reason),
        ('revenue', c.revenue, c.revenue_reason)
    ) as p (column_name, value, reason)
where c.is_rejected and p.reason is not null
