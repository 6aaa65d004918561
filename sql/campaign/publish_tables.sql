-- the run's schedule inputs for the publish pass (several statements: one round trip)
create temp table publish_timings (timing text, delay_minutes integer) on commit drop;
create temp table publish_quiet (channel text, quiet_start time, quiet_end time) on commit drop;
create temp table publish_timezones (tz text primary key) on commit drop;
create temp table publish_released (tz text primary key) on commit drop;
create temp table publish_best_times (user_id bigint primary key, send_time time) on commit drop;
create temp table publish_schedule (
    tz text, timing text, channel text, send_time time, scheduled_at timestamptz,
    primary key (tz, timing, channel, send_time)
) on commit drop;
