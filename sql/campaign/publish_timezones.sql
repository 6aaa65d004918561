-- pg_timezone_names is a costly function scan: read it once, never per row
insert into publish_timezones
select distinct name from pg_timezone_names
