-- The input files refused by the loads of one night (their reference time) that no later load of
-- that night made good: a file is made good when a file of the same name loaded after it with the
-- same reference time (the corrected file dropped again and the night re-run). Refusals stay in
-- load_log, so a retry of the nightly run still sees them. Params: reference_at.

with refused as (
    select
        load_id,
        file_name,
        message,
        rows_read,
        rows_rejected,
        reference_at
    from recsys.load_log
    where status = 'refused' and reference_at = %(reference_at)s
),

final as (
    select
        r.load_id,
        r.file_name,
        r.message,
        r.rows_read,
        r.rows_rejected
    from refused as r
    where not exists (
        select from recsys.load_log as l
        where
            l.file_name = r.file_name
            and l.reference_at = r.reference_at
            and l.status = 'loaded'
            and l.load_id > r.load_id
    )
)

select * from final
order by load_id
