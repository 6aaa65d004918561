-- time zone names PostgreSQL knows; anything else falls back to UTC (counted)
insert into stage_timezones
select distinct name from pg_timezone_names
