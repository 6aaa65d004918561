-- the write's staging tables, dropped at commit (several statements: one round trip)
create temp table stage_offers (
    user_id bigint, action_id integer, propensity double precision, is_exploration boolean,
    is_holdout boolean, message_id integer, category_code integer, segment_code integer
) on commit drop;
create temp table stage_actions (
    action_id integer, offer_type text, offer_value numeric, value_unit text, channel text, timing text,
    category_offer boolean, is_rest boolean
) on commit drop;
create temp table stage_messages (
    message_id integer, subject text, body text, is_html boolean, max_chars integer,
    fallback_subject text, fallback_body text, marker_count integer, base_chars integer
) on commit drop;
create temp table stage_timings (timing text, delay_minutes integer) on commit drop;
create temp table stage_codes (kind text, code integer, name text) on commit drop;
create temp table stage_quiet (channel text, quiet_start time, quiet_end time) on commit drop;
create temp table stage_timezones (tz text primary key) on commit drop;
create temp table stage_best_times (user_id bigint primary key, send_time time) on commit drop;
create temp table stage_decisions (
    user_id bigint, decision_code smallint, action_id integer, propensity double precision,
    is_exploration boolean, skip_code smallint, segment_code integer
) on commit drop;
