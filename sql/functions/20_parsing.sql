-- Parsing helpers used by the loader's validation queries. Each returns null for text it cannot
-- read, so one bad value becomes one reject instead of failing a whole load.

-- ISO 8601 timestamp (date, or date and time with optional fraction and offset); naive = UTC
-- because the loader's session runs in UTC. A cheap shape test (LIKE is far faster than a regular
-- expression here) admits text that starts with a YYYY-MM-DD date; PostgreSQL's own parser, behind
-- an exception handler, does the rest and says null for what it cannot read (30 February, ...).
create or replace function recsys.try_timestamptz(value text)
returns timestamptz
language plpgsql
stable
as $$
begin
    return value::timestamptz;
exception when others then
    return null;
end;
$$;

comment on function recsys.try_timestamptz(text) is
'value::timestamptz, or null when PostgreSQL cannot read it.';

create or replace function recsys.parse_iso_timestamp(value text)
returns timestamptz
language sql
stable
as $$
    select case
        when value like '____-__-__' or value like '____-__-__T%' or value like '____-__-__ %'
            then recsys.try_timestamptz(value)
    end
$$;

comment on function recsys.parse_iso_timestamp(text) is
'An ISO 8601 timestamp (YYYY-MM-DD[THH:MM[:SS[.ffffff]]][Z|+HH:MM]; naive = session time zone, UTC in loads), or null.';

-- The loader's optimistic fast path: a plain cast, which fails the whole statement on one bad
-- value; the loader then runs the same validation again with parse_iso_timestamp.
create or replace function recsys.cast_iso_timestamp(value text)
returns timestamptz
language sql
stable
as $$
    select case
        when value like '____-__-__' or value like '____-__-__T%' or value like '____-__-__ %'
            then value::timestamptz
    end
$$;

comment on function recsys.cast_iso_timestamp(text) is
'parse_iso_timestamp without the per-value exception handler: raises on an unreadable date.';

create or replace function recsys.parse_bool(value text)
returns boolean
language sql
immutable
as $$
    -- the common spellings first: lower() converts through the locale's wide characters (slow)
    select case value
        when 'true' then true when 'false' then false
        else case lower(value)
            when 'true' then true when 't' then true when 'yes' then true when 'y' then true
            when '1' then true when '1.0' then true
            when 'false' then false when 'f' then false when 'no' then false when 'n' then false
            when '0' then false when '0.0' then false
        end
    end
$$;

comment on function recsys.parse_bool(text) is
'true/false, t/f, yes/no, y/n, 1/0 (any case) as a boolean; null for anything else.';

create or replace function recsys.parse_bigint(value text)
returns bigint
language sql
immutable
as $$
    select case
        when length(value) > 18 then null
        when value ~ '^[+-]?[0-9]+$' then value::bigint
        when value ~ '^[+-]?[0-9]+[.]0*$' then split_part(value, '.', 1)::bigint
    end
$$;

comment on function recsys.parse_bigint(text) is
'A whole number that fits a bigint (42.0 reads as 42), or null.';

create or replace function recsys.parse_numeric(value text)
returns numeric
language sql
immutable
as $$
    select case
        when length(value) > 40 then null
        when value ~ '^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9][0-9]?)?$' then value::numeric
    end
$$;

comment on function recsys.parse_numeric(text) is
'A decimal number (optionally with an exponent), or null.';

-- The loaders' cleaning of a text value: spaces trimmed, empty as null. The common value has
-- nothing to trim: two LIKE tests then spare btrim's copy of it (a third of the events check's
-- time went to btrim). Inlined by PostgreSQL, so the test costs no function call.
create or replace function recsys.trim_to_null(value text)
returns text
language sql
immutable
as $$
    select case
        when value like ' %' or value like '% ' or value = '' then nullif(btrim(value), '')
        else value
    end
$$;

comment on function recsys.trim_to_null(text) is
'nullif(btrim(value), ''''): value without leading and trailing spaces, null when nothing is left.';
