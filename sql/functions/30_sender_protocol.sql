-- The sender protocol (contract section 3): what a message sender, in any language, calls to take
-- due offers off recsys.campaign_offers and report what became of them.
--
-- Lifecycle of an offer: scheduled -> claimed (leased to one worker) -> sent; a failure puts it back
-- to scheduled behind a back-off until max_attempts claims were used, then failed; a claim given
-- back untried (release_offer: the channel went down) returns to scheduled without using an
-- attempt; a claim whose lease runs out without ack or fail becomes claimable again; past expires_at it becomes expired;
-- a user who no longer consents to the channel (or has no address on it), or whose address on it
-- is suppressed (a hard bounce, recsys.address_suppressions), gets it cancelled.
--
-- Bounds (documented in docs/integrate-a-sender.md, "Protocol bounds"): a lease is at most 1 hour and a retry_after
-- at most 24 hours (longer values are clamped; a negative retry_after counts as zero); events are
-- accepted only for offers a sender claimed (first_claimed_at), with an event_at between the first
-- claim and now(), each side widened by recsys.offer_event_clock_skew() (5 minutes).
--
-- Who holds an offer: the worker named in claimed_by while the status is 'claimed', i.e. the worker
-- that made the latest claim. Its ack or fail is accepted even after its lease ran out, as long as
-- the offer was not taken since (claimed again, or expired/failed/cancelled by a claim's
-- housekeeping): the message was sent, and refusing the ack would only make another sender send it
-- twice. Once another worker claims it, the first one's ack is refused (false).
--
-- The protocol functions (claim, ack, fail, release, record an event) run as their owner (SECURITY
-- DEFINER, fixed search_path): the sender role gets EXECUTE on them and no privilege on any table (recsys/migrate.py ensure_roles). JIT is
-- off for them: the claim's cost estimate (a scan of every due offer, though it stops after a batch)
-- crosses jit_above_cost, and compiling took seconds per call for a query that runs in milliseconds.

create or replace function recsys.offer_event_clock_skew()
returns interval
language sql
immutable
parallel safe
as $$ select interval '5 minutes' $$;

comment on function recsys.offer_event_clock_skew() is
'How far an offer event''s event_at may lie outside [first claim, now()]: the clocks of providers '
'and senders differ from the database''s by a little. record_offer_event and feedback files use it.';

create or replace function recsys.normalized_address(p_channel text, p_address text)
returns text
language sql
immutable
parallel safe
as $$
    select nullif(
        case p_channel
            when 'email' then lower(btrim(p_address))
            when 'sms' then regexp_replace(p_address, '[[:space:]().-]', '', 'g')
            else btrim(p_address)
        end,
        ''
    )
$$;

comment on function recsys.normalized_address(text, text) is
'An address as address_suppressions keys it, so that the same address written differently stays '
'the same: email trimmed and lower-cased, phone without spaces, dots, dashes and brackets, push token trimmed.';

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
    -- A lease longer than this is clamped to it: a sender that dies holding a batch keeps it from
    -- every other sender for at most this long.
    max_lease constant interval := interval '1 hour';
    lease interval;
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
    lease := least(p_lease, max_lease);

    loop
        seen := 0;
        got := 0;
        -- One pass over the claim window: due offers of published runs, not under a live lease,
        -- oldest due first through campaign_offers_claimable_idx, skipping rows another caller holds.
        -- Each row is claimed, or (stale rows come first in this order) expires past expires_at,
        -- fails when its last attempt's lease ran out, or is cancelled when its user no longer
        -- consents to the channel or has no address on it, or when that address is suppressed.
        -- The consent, address and run checks are scalar subqueries, not joins, so the plan stays on
        -- the index in due order and stops early.
        for rec in
            with window_rows as (
                select
                    o.campaign_date,
                    o.offer_id,
                    o.expires_at,
                    o.attempts,
                    o.max_attempts,
                    -- the address, only when the user consents to the channel and has one there
                    (
                        select case p_channel
                            when 'email' then
                                case when u.email_opt_in and nullif(btrim(u.email), '') is not null then u.email end
                            when 'sms' then
                                case when u.sms_opt_in and nullif(btrim(u.phone), '') is not null then u.phone end
                            else
                                case
                                    when u.push_opt_in and nullif(btrim(u.push_token), '') is not null
                                        then u.push_token
                                end
                        end
                        from recsys.users as u where u.user_id = o.user_id
                    ) as reachable_address
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

            decided as (
                select
                    w.campaign_date,
                    w.offer_id,
                    w.reachable_address,
                    case
                        when w.expires_at <= now() then 'expired'
                        when w.attempts >= w.max_attempts then 'failed'
                        when w.reachable_address is null then 'cancelled'
                        when exists (
                            select from recsys.address_suppressions as s
                            where
                                s.channel = p_channel
                                and s.address = recsys.normalized_address(p_channel, w.reachable_address)
                        ) then 'suppressed'
                        else 'claimed'
                    end as outcome
                from window_rows as w
            ),

            changed as (
                update recsys.campaign_offers as o
                set
                    status = case d.outcome when 'suppressed' then 'cancelled' else d.outcome end,
                    attempts = o.attempts + (d.outcome = 'claimed')::integer,
                    claimed_by = case when d.outcome = 'claimed' then p_worker else o.claimed_by end,
                    claimed_at = case when d.outcome = 'claimed' then now() else o.claimed_at end,
                    first_claimed_at = case
                        when d.outcome = 'claimed' then coalesce(o.first_claimed_at, now()) else o.first_claimed_at
                    end,
                    claimed_address = case when d.outcome = 'claimed' then d.reachable_address else o.claimed_address end,
                    lease_until = case when d.outcome = 'claimed' then now() + lease end,
                    last_error = case d.outcome
                        when 'failed' then coalesce(o.last_error || '; ', '')
                            || 'lease ran out on the last attempt without ack or fail'
                        when 'cancelled' then 'cancelled at claim: the user no longer consents to '
                            || p_channel || ' or has no address'
                        when 'suppressed' then 'cancelled at claim: the user''s ' || p_channel
                            || ' address is suppressed (it bounced); a new address lifts it'
                        else o.last_error
                    end,
                    updated_at = now()
                from decided as d
                where o.campaign_date = d.campaign_date and o.offer_id = d.offer_id
                returning
                    o.offer_id, o.user_id, o.channel, o.claimed_address, o.subject, o.body, o.offer_type,
                    o.offer_value, o.scheduled_at, o.expires_at, o.attempts, o.status
            )

            select * from changed
        loop
            seen := seen + 1;
            if rec.status = 'claimed' then
                got := got + 1;
                offer_id := rec.offer_id;
                user_id := rec.user_id;
                channel := rec.channel;
                address := rec.claimed_address;
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
'Sender protocol: lease up to max_rows due offers of published runs on a channel to worker for lease '
'(at most 1 hour: a longer lease is clamped); returns each with the recipient''s address. Offers whose '
'user no longer consents, has no address, or whose address is suppressed (bounced) become cancelled.';

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

-- fail_offer and release_offer both hand a claim back; this one statement does it for both, so the
-- holder check, the retry_after clamps and the expiry rule are written once. Not part of the
-- protocol: it runs with its caller's rights (the two definer functions), and PUBLIC may not call it.
create or replace function recsys.requeue_claimed_offer(
    p_caller text, p_offer_id bigint, p_worker text, p_retry_after interval, p_message text, p_untried boolean
)
returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    -- A retry_after longer than this is clamped to it (a provider's Retry-After of days would hold
    -- the offer past any useful time); a negative one (a Retry-After date already past) counts as 0.
    max_retry_after constant interval := interval '24 hours';
    -- (greatest and least skip nulls: null, no retry_after given, must stay null)
    retry_after interval := case
        when p_retry_after is not null then least(greatest(p_retry_after, interval '0'), max_retry_after)
    end;
begin
    -- Without a retry_after, a failed send waits the default back-off (1 minute after the first
    -- attempt, doubling, at most 1 hour) and an untried one none. An offer whose retry would come at
    -- or after its expiry expires now instead of waiting for it; a failed send with no attempt left fails.
    -- The row is locked as it is read (for update): under READ COMMITTED a call that waits for another
    -- worker's fresh claim re-reads the row once that claim commits and finds it no longer holds it.
    -- The update repeats the holder check, so it can never land on a row this worker does not hold.
    with target as (
        select
            o.campaign_date,
            o.offer_id,
            o.attempts < o.max_attempts as attempts_left,
            now() + coalesce(
                retry_after,
                case
                    when p_untried then interval '0'
                    else least(interval '1 minute' * power(2, o.attempts - 1), interval '1 hour')
                end
            ) as retry_at,
            o.expires_at
        from recsys.campaign_offers as o
        where o.offer_id = p_offer_id and o.status = 'claimed' and o.claimed_by = p_worker
        for update of o
    ),

    decided as (
        select
            t.campaign_date,
            t.offer_id,
            t.retry_at,
            case
                when not (p_untried or t.attempts_left) then 'failed'
                when t.retry_at >= t.expires_at then 'expired'
                else 'scheduled'
            end as outcome
        from target as t
    )

    update recsys.campaign_offers as o
    set
        status = t.outcome,
        -- an untried claim gives its attempt back
        attempts = case when p_untried then greatest(o.attempts - 1, 0) else o.attempts end,
        -- claimable again at retry_at; an untried offer with nothing to wait for at once
        lease_until = case when t.outcome = 'scheduled' and (t.retry_at > now() or not p_untried) then t.retry_at end,
        -- no message (a release without a reason) keeps the last error
        last_error = coalesce(
            left(
                p_message
                || case when t.outcome = 'expired' then ' (no retry: it would come after the offer expires)' else '' end,
                2000
            ),
            o.last_error
        ),
        updated_at = now()
    from decided as t
    where
        o.campaign_date = t.campaign_date
        and o.offer_id = t.offer_id
        and o.status = 'claimed'
        and o.claimed_by = p_worker;
    if found then
        return true;
    end if;
    perform from recsys.campaign_offers as o where o.offer_id = p_offer_id;
    if not found then
        raise exception '%: no offer with offer_id %', p_caller, p_offer_id using errcode = '22023';
    end if;
    return false;
end;
$$;

revoke execute on function recsys.requeue_claimed_offer(text, bigint, text, interval, text, boolean) from public;

comment on function recsys.requeue_claimed_offer(text, bigint, text, interval, text, boolean) is
'Internal to fail_offer and release_offer (untried): the claim holder hands an offer back, to scheduled '
'behind retry_after (clamped to [0, 24 h]) or the back-off, expired when that is at or after expires_at, '
'failed when a failed send has no attempt left. False when the worker does not hold the claim.';

create or replace function recsys.fail_offer(
    p_offer_id bigint, p_worker text, p_error text, p_retry_after interval default null
)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
    return recsys.requeue_claimed_offer(
        'fail_offer', p_offer_id, p_worker, p_retry_after, coalesce(nullif(btrim(p_error), ''), 'unspecified error'),
        false
    );
end;
$$;

comment on function recsys.fail_offer(bigint, text, text, interval) is
'Sender protocol: the claim holder reports a failed send: back to scheduled behind a back-off '
'(retry_after clamped to [0, 24 h]; default 1 min doubling per attempt, at most 1 h) while attempts '
'remain, else failed; expired at once when the retry would come at or after expires_at. '
'Returns false when the worker does not hold the claim.';

create or replace function recsys.release_offer(
    p_offer_id bigint, p_worker text, p_retry_after interval default null, p_reason text default null
)
returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
    -- An offer the sender claimed but never tried (its channel went down first) goes back to
    -- scheduled, claimable again after retry_after (none: at once), and its claim's attempt is given
    -- back: an outage must not use up the attempts of offers nobody tried to send.
    return recsys.requeue_claimed_offer('release_offer', p_offer_id, p_worker, p_retry_after, nullif(btrim(p_reason), ''), true);
end;
$$;

comment on function recsys.release_offer(bigint, text, interval, text) is
'Sender protocol: the claim holder gives back an offer it did not try to send (its channel is down): '
'back to scheduled without using an attempt, claimable again after retry_after (clamped to [0, 24 h]; '
'none: at once); expired at once when that would be at or after expires_at. reason, if given, becomes '
'last_error. Returns false when the worker does not hold the claim.';

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
    skew constant interval := recsys.offer_event_clock_skew();
    skew_text constant text := extract(epoch from skew)::integer / 60 || ' minute';
    offer_user bigint;
    offer_channel text;
    first_claim timestamptz;
    sent_to text;
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
    select o.user_id, o.channel, o.first_claimed_at, o.claimed_address
    into offer_user, offer_channel, first_claim, sent_to
    from recsys.campaign_offers as o
    where o.offer_id = p_offer_id;
    if not found then
        raise exception 'record_offer_event: no offer with offer_id %', coalesce(p_offer_id::text, 'null')
            using errcode = '22023';
    end if;
    -- Bounds: nothing can happen to an offer no sender took, or before it was taken, or later than
    -- now (a far-future unsubscribe would stamp the users row with a time no later upsert beats).
    if first_claim is null then
        raise exception 'record_offer_event: % of offer % refused: the offer was never claimed by a sender',
            p_event, p_offer_id
            using errcode = '22023', hint = 'Events are accepted once a sender has claimed the offer.';
    end if;
    if p_event_at < first_claim - skew then
        raise exception 'record_offer_event: % of offer % at % refused: before the offer''s first claim at % (less the % clock skew)',
            p_event, p_offer_id, p_event_at, first_claim, skew_text
            using errcode = '22023';
    end if;
    if p_event_at > now() + skew then
        raise exception 'record_offer_event: % of offer % at % refused: in the future (later than now, %, plus the % clock skew)',
            p_event, p_offer_id, p_event_at, now(), skew_text
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

    -- Every bounced report counts as a hard bounce (soft ones are send failures: fail_offer).
    -- It suppresses the address the offer went to; offers marked sent without a claim (the
    -- simulator) have none recorded, and the user's present address stands in.
    if is_new and p_event = 'bounced' then
        if sent_to is null then
            select case offer_channel when 'email' then u.email when 'sms' then u.phone else u.push_token end
            into sent_to
            from recsys.users as u
            where u.user_id = offer_user;
        end if;
        insert into recsys.address_suppressions (channel, address, reason, offer_id, user_id, suppressed_at)
        select offer_channel, a.address, 'bounced', p_offer_id, offer_user, p_event_at
        from (select recsys.normalized_address(offer_channel, sent_to) as address) as a
        where a.address is not null
        on conflict (channel, address) do nothing;
    end if;
    return is_new;
end;
$$;

comment on function recsys.record_offer_event(bigint, text, timestamptz, numeric) is
'Sender protocol: records what happened to an offer, once per (offer, event): the first report wins '
'and the result says whether this one was new. Refused (22023, nothing written) for an offer never '
'claimed, or an event_at before its first claim or after now(), each by more than '
'offer_event_clock_skew(). unsubscribed revokes the channel''s consent; bounced suppresses the address.';
