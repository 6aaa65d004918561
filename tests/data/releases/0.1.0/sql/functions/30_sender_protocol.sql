-- The sender protocol (contract section 3): what a message sender, in any language, calls to take
-- due offers off recsys.campaign_offers and report what became of them.
--
-- Lifecycle of an offer: scheduled -> claimed (leased to one worker) -> sent; a failure puts it back
-- to scheduled behind a back-off until max_attempts claims were used, then failed; a claim whose
-- lease runs out without ack or fail becomes claimable again; past expires_at it becomes expired;
-- a user who no longer consents to the channel (or has no address on it) gets it cancelled.
--
-- Who holds an offer: the worker named in claimed_by while the status is 'claimed', i.e. the worker
-- that made the latest claim. Its ack or fail is accepted even after its lease ran out, as long as
-- the offer was not taken since (claimed again, or expired/failed/cancelled by a claim's
-- housekeeping): the message was sent, and refusing the ack would only make another sender send it
-- twice. Once another worker claims it, the first one's ack is refused (false).
--
-- The four protocol functions run as their owner (SECURITY DEFINER, fixed search_path): the sender
-- role gets EXECUTE on them and no privilege on any table (recsys/migrate.py ensure_roles). JIT is
-- off for them: the claim's cost estimate (a scan of every due offer, though it stops after a batch)
-- crosses jit_above_cost, and compiling took seconds per call for a query that runs in milliseconds.

create or replace function recsys.expire_offers(p_channel text default null)
returns integer
language plpgsql
as $$
declare
    expired integer;
    given_up integer;
begin
    -- open offers past their validity; rows under a live lease stay with their holder
    with due as (
        select o.campaign_date, o.offer_id
        from recsys.campaign_offers as o
        where
            o.status in ('scheduled', 'claimed')
            and (p_channel is null or o.channel = p_channel)
            and o.scheduled_at < now()
            and o.expires_at <= now()
            and (o.lease_until is null or o.lease_until <= now())
        for update of o skip locked
    )

    update recsys.campaign_offers as o
    set status = 'expired', lease_until = null, updated_at = now()
    from due
    where o.campaign_date = due.campaign_date and o.offer_id = due.offer_id;
    get diagnostics expired = row_count;

    -- a claim that used the last attempt and whose lease ran out without ack or fail: give up
    with abandoned as (
        select o.campaign_date, o.offer_id
        from recsys.campaign_offers as o
        where
            o.status = 'claimed'
            and (p_channel is null or o.channel = p_channel)
            and o.scheduled_at <= now()
            and o.lease_until <= now()
            and o.attempts >= o.max_attempts
        for update of o skip locked
    )

    update recsys.campaign_offers as o
    set
        status = 'failed',
        lease_until = null,
        last_error = coalesce(o.last_error || '; ', '') || 'lease ran out on the last attempt without ack or fail',
        updated_at = now()
    from abandoned
    where o.campaign_date = abandoned.campaign_date and o.offer_id = abandoned.offer_id;
    get diagnostics given_up = row_count;
    return expired + given_up;
end;
$$;

comment on function recsys.expire_offers(text) is
'Housekeeping sweep (claim_offers does the same on its claim window): open offers past expires_at become expired; '
'claims whose lease ran out on their last attempt become failed. Returns how many rows changed.';

create or replace function recsys.claim_offers(
    p_channel text, p_worker text, p_max_rows integer, p_lease interval
)
returns table (
    offer_id bigint,
    user_id bigint,
    channel text,
    address text,
    subject text,
    body text,
    offer_type text,
    offer_value numeric,
    scheduled_at timestamptz,
    expires_at timestamptz,
    attempts integer
)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
    wanted integer := p_max_rows;
    got integer;
    seen integer;
    rec record;
begin
    if p_channel is null or p_channel not in ('email', 'sms', 'push') then
        raise exception 'claim_offers: unknown channel %, expected email, sms or push', coalesce(p_channel, 'null')
            using errcode = '22023';
    end if;
    if p_worker is null or btrim(p_worker) = '' then
        raise exception 'claim_offers: worker must name the sender (got an empty name)' using errcode = '22023';
    end if;
    if p_max_rows is null or p_max_rows < 1 or p_max_rows > 10000 then
        raise exception 'claim_offers: max_rows must be between 1 and 10000, got %', coalesce(p_max_rows::text, 'null')
            using errcode = '22023';
    end if;
    if p_lease is null or p_lease <= interval '0' then
        raise exception 'claim_offers: lease must be a positive interval, got %', coalesce(p_lease::text, 'null')
            using errcode = '22023';
    end if;

    loop
        seen := 0;
        got := 0;
        -- One pass over the claim window: due offers of published runs, not under a live lease,
        -- oldest due first through campaign_offers_claimable_idx, skipping rows another caller holds.
        -- Each row is claimed, or (stale rows come first in this order) expires past expires_at,
        -- fails when its last attempt's lease ran out, or is cancelled when its user no longer
        -- consents to the channel or has no address on it. The consent and run checks are scalar
        -- subqueries, not joins, so the plan stays on the index in due order and stops early.
        for rec in
            with window_rows as (
                select
                    o.campaign_date,
                    o.offer_id,
                    case
                        when o.expires_at <= now() then 'expired'
                        when o.attempts >= o.max_attempts then 'failed'
                        when not coalesce((
                            select case p_channel
                                when 'email' then u.email_opt_in and nullif(btrim(u.email), '') is not null
                                when 'sms' then u.sms_opt_in and nullif(btrim(u.phone), '') is not null
                                else u.push_opt_in and nullif(btrim(u.push_token), '') is not null
                            end
                            from recsys.users as u where u.user_id = o.user_id
                        ), false) then 'cancelled'
                        else 'claimed'
                    end as new_status
                from recsys.campaign_offers as o
                where
                    o.channel = p_channel
                    and o.status in ('scheduled', 'claimed')
                    and o.scheduled_at <= now()
                    and (o.lease_until is null or o.lease_until <= now())
                    and (select r.state from recsys.campaign_runs as r where r.run_id = o.run_id) = 'published'
                order by o.scheduled_at
                limit wanted
                for update of o skip locked
            ),

            changed as (
                update recsys.campaign_offers as o
                set
                    status = w.new_status,
                    attempts = o.attempts + (w.new_status = 'claimed')::integer,
                    claimed_by = case when w.new_status = 'claimed' then p_worker else o.claimed_by end,
                    claimed_at = case when w.new_status = 'claimed' then now() else o.claimed_at end,
                    lease_until = case when w.new_status = 'claimed' then now() + p_lease end,
                    last_error = case w.new_status
                        when 'failed' then coalesce(o.last_error || '; ', '')
                            || 'lease ran out on the last attempt without ack or fail'
                        when 'cancelled' then 'cancelled at claim: the user no longer consents to '
                            || p_channel || ' or has no address'
                        else o.last_error
                    end,
                    updated_at = now()
                from window_rows as w
                where o.campaign_date = w.campaign_date and o.offer_id = w.offer_id
                returning
                    o.offer_id, o.user_id, o.channel, o.subject, o.body, o.offer_type, o.offer_value,
                    o.scheduled_at, o.expires_at, o.attempts, o.status
            )

            select
                c.*,
                case p_channel when 'email' then u.email when 'sms' then u.phone else u.push_token end as address
            from changed as c
            left join recsys.users as u on c.user_id = u.user_id
        loop
            seen := seen + 1;
            if rec.status = 'claimed' then
                got := got + 1;
                offer_id := rec.offer_id;
                user_id := rec.user_id;
                channel := rec.channel;
                address := rec.address;
                subject := rec.subject;
                body := rec.body;
                offer_type := rec.offer_type;
                offer_value := rec.offer_value;
                scheduled_at := rec.scheduled_at;
                expires_at := rec.expires_at;
                attempts := rec.attempts;
                return next;
            end if;
        end loop;
        wanted := wanted - got;
        -- another pass only when stale rows took up part of a full window
        exit when wanted <= 0 or seen = got;
    end loop;
end;
$$;

comment on function recsys.claim_offers(text, text, integer, interval) is
'Sender protocol: lease up to max_rows due offers of published runs on a channel to worker for lease; '
'returns each with the recipient''s address. Offers whose user no longer consents become cancelled.';

create or replace function recsys.ack_offer(p_offer_id bigint, p_worker text)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
    current_status text;
    holder text;
begin
    update recsys.campaign_offers as o
    set status = 'sent', sent_at = now(), lease_until = null, updated_at = now()
    where o.offer_id = p_offer_id and o.status = 'claimed' and o.claimed_by = p_worker;
    if found then
        return true;
    end if;
    select o.status, o.claimed_by into current_status, holder
    from recsys.campaign_offers as o
    where o.offer_id = p_offer_id;
    if not found then
        raise exception 'ack_offer: no offer with offer_id %', p_offer_id using errcode = '22023';
    end if;
    -- re-ack by the worker that sent it: idempotent
    return current_status = 'sent' and holder is not distinct from p_worker;
end;
$$;

comment on function recsys.ack_offer(bigint, text) is
'Sender protocol: marks an offer sent. Accepted (true) only from the worker holding the latest claim '
'(even past its lease, unless re-claimed since); a repeated ack by that worker is true and changes nothing.';

create or replace function recsys.fail_offer(
    p_offer_id bigint, p_worker text, p_error text, p_retry_after interval default null
)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
    backoff interval;
begin
    if p_retry_after is not null and p_retry_after < interval '0' then
        raise exception 'fail_offer: retry_after must not be negative, got %', p_retry_after using errcode = '22023';
    end if;
    -- default back-off: 1 minute after the first attempt, doubling, at most 1 hour
    update recsys.campaign_offers as o
    set
        status = case when o.attempts < o.max_attempts then 'scheduled' else 'failed' end,
        lease_until = case
            when o.attempts < o.max_attempts
                then now() + coalesce(p_retry_after, least(interval '1 minute' * power(2, o.attempts - 1), interval '1 hour'))
        end,
        last_error = left(coalesce(nullif(btrim(p_error), ''), 'unspecified error'), 2000),
        updated_at = now()
    where o.offer_id = p_offer_id and o.status = 'claimed' and o.claimed_by = p_worker;
    if found then
        return true;
    end if;
    perform from recsys.campaign_offers as o where o.offer_id = p_offer_id;
    if not found then
        raise exception 'fail_offer: no offer with offer_id %', p_offer_id using errcode = '22023';
    end if;
    return false;
end;
$$;

comment on function recsys.fail_offer(bigint, text, text, interval) is
'Sender protocol: the claim holder reports a failed send: back to scheduled behind a back-off '
'(retry_after, default 1 min doubling per attempt, at most 1 h) while attempts remain, else failed. '
'Returns false when the worker does not hold the claim.';

create or replace function recsys.record_offer_event(
    p_offer_id bigint, p_event text, p_event_at timestamptz, p_revenue numeric default null
)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
    offer_user bigint;
    offer_channel text;
    is_new boolean;
begin
    if p_event is null or p_event not in ('delivered', 'opened', 'clicked', 'converted', 'unsubscribed', 'bounced') then
        raise exception 'record_offer_event: unknown event %, expected delivered, opened, clicked, converted, unsubscribed or bounced',
            coalesce(p_event, 'null') using errcode = '22023';
    end if;
    if p_event_at is null then
        raise exception 'record_offer_event: event_at is required (offer %)', p_offer_id using errcode = '22023';
    end if;
    if p_revenue < 0 then
        raise exception 'record_offer_event: revenue must be >= 0, got % (offer %)', p_revenue, p_offer_id
            using errcode = '22023';
    end if;
    select o.user_id, o.channel into offer_user, offer_channel
    from recsys.campaign_offers as o
    where o.offer_id = p_offer_id;
    if not found then
        raise exception 'record_offer_event: no offer with offer_id %', coalesce(p_offer_id::text, 'null')
            using errcode = '22023';
    end if;

    insert into recsys.offer_events (offer_id, event, event_at, revenue, source)
    values (p_offer_id, p_event, p_event_at, round(p_revenue, 2), 'sender')
    on conflict do nothing;
    is_new := found;

    if is_new and p_event = 'unsubscribed' then
        insert into recsys.consent_revocations (user_id, channel, revoked_at, offer_id)
        values (offer_user, offer_channel, p_event_at, p_offer_id)
        on conflict do nothing;
        -- a users row newer than the unsubscribe grants the consent again (contract section 1)
        update recsys.users as u
        set
            email_opt_in = case when offer_channel = 'email' then false else u.email_opt_in end,
            sms_opt_in = case when offer_channel = 'sms' then false else u.sms_opt_in end,
            push_opt_in = case when offer_channel = 'push' then false else u.push_opt_in end,
            updated_at = greatest(u.updated_at, p_event_at)
        where u.user_id = offer_user and (u.updated_at is null or u.updated_at <= p_event_at);
    end if;
    return is_new;
end;
$$;

comment on function recsys.record_offer_event(bigint, text, timestamptz, numeric) is
'Sender protocol: records what happened to an offer, once per (offer, event): the first report wins '
'and the result says whether this one was new. unsubscribed revokes the channel''s consent.';
