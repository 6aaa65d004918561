-- Record every problem of every rejected staged row of one sheet (one row per column that failed)
-- and, for users, every field dropped from a loaded row (a header field with a line break).
-- Params: load_id, file_name, sheet. Identifiers (recsys.data.extract.sheets.rejects_sql):
-- checked, the sheet's pg_temp table from <sheet>_check.sql; problems, a values list of
-- (column named in the reject, c.<value column>, c.<reason column>) from sheets.REJECTS;
-- reported, the flags of the rows whose problems are recorded (c.is_rejected, for users also
-- c.has_dropped_fields).

insert into recsys.load_rejects (load_id, file_name, sheet, row_number, column_name, value, reason)
select
    %(load_id)s as load_id,
    %(file_name)s as file_name,
    %(sheet)s as sheet,
    c.row_number,
    p.column_name,
    left(p.value, 200) as value,
    p.reason
from pg_temp.{checked} as c
cross join lateral ({problems}) as p (column_name, value, reason)
where ({reported}) and p.reason is not null
