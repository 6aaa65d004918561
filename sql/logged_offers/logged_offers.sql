-- Logged decisions, as learning and off-policy evaluation read them: each offer of
-- recsys.v_logged_offers in the window (all its columns: the decision, its outcome and the features
-- the system had when it decided) with the consent the user had on each channel when the offer was
-- sent, and whether the user could be reached there.
--
-- Window: sent_from <= sent_at < sent_before and decided_from <= features_as_of < decided_before
-- (each null: open). Order: by send time when by_send, else by decision date; then offer id.
-- Rests (decision 'rest': no offer, reward 0) only when with_rests: off-policy evaluation reads
-- them, the response model's fit does not (nothing was sent, so they say nothing of responses).
-- With sample_rate (null: every decision), a uniform sample of the decisions: those whose
-- offer id hashes (with sample_seed) below that share of the hash range; a larger rate with the
-- same seed keeps every decision of the smaller one. With sample_keep_from too, every decision
-- of that date or later is kept whole and only the earlier ones are sampled.
--
-- Consent at send time. No table keeps a history of consent, so it is read from the records the
-- database holds of a user's consent on a channel at a moment:
--   - the users row: its opt-in, from the time its values were set (updated_at, else loaded_at) on;
--   - each unsubscribe the system recorded (consent_revocations): consent before it, none from it on;
--   - each logged offer sent on the channel (recsys.v_offer_log): consent then (it was sent there).
-- The consent at the send is that of the latest record at or before it; before the user's first
-- record, the consent that record says held just before it; a user without any record has none.
-- Ties at one moment: an unsubscribe comes first, then the users row, then offers sent.
-- Reachable: consent at the send and an address now (addresses keep no history), or the offer's
-- own channel (it reached the user there).
with logged as (
    select o.*
    from recsys.v_logged_offers as o
    where
        (%(sent_from)s::timestamptz is null or o.sent_at >= %(sent_from)s::timestamptz)
        and (%(sent_before)s::timestamptz is null or o.sent_at < %(sent_before)s::timestamptz)
        and (%(decided_from)s::date is null or o.features_as_of >= %(decided_from)s::date)
        and (%(decided_before)s::date is null or o.features_as_of < %(decided_before)s::date)
        and (%(with_rests)s or o.decision = 'offer')
        and (
            %(sample_rate)s::float8 is null
            or o.features_as_of >= %(sample_keep_from)s::date
            or (hashtextextended(o.offer_id, %(sample_seed)s::bigint) & 4294967295)::float8 / 4294967296.0
            < %(sample_rate)s::float8
        )
),

logged_users as (
    select distinct user_id from logged
),

records as (
    select
        r.user_id,
        r.channel,
        r.revoked_at as recorded_at,
        0 as tie_order,
        true as consent_before,
        false as consent_after
    from recsys.consent_revocations as r
    where r.user_id in (select l.user_id from logged_users as l)
    union all
    select
        u.user_id,
        c.channel,
        coalesce(u.updated_at, u.loaded_at) as recorded_at,
        1 as tie_order,
        c.opt_in as consent_before,
        c.opt_in as consent_after
    from recsys.users as u
    cross join
        lateral (
            values ('email', u.email_opt_in), ('sms', u.sms_opt_in), ('push', u.push_opt_in)
        ) as c (channel, opt_in)
    where u.user_id in (select l.user_id from logged_users as l)
    union all
    select
        s.user_id,
        s.channel,
        s.sent_at as recorded_at,
        2 as tie_order,
        true as consent_before,
        true as consent_after
    from recsys.v_offer_log as s
    where s.user_id in (select l.user_id from logged_users as l)
),

first_records as (
    select distinct on (user_id, channel)
        user_id,
        channel,
        recorded_at,
        consent_before
    from records
    order by user_id, channel, recorded_at, tie_order
),

spans as (
    -- each record's consent holds from it until the next record of the user and channel
    select
        user_id,
        channel,
        recorded_at as valid_from,
        lead(recorded_at) over by_time as valid_until,
        consent_after as consent
    from records
    window by_time as (partition by user_id, channel order by recorded_at, tie_order)
    union all
    -- before the first record, what it says held just before it
    select
        user_id,
        channel,
        '-infinity'::timestamptz as valid_from,
        recorded_at as valid_until,
        consent_before as consent
    from first_records
),

final as (
    select
        o.*,
        coalesce(e.consent, false) as email_consent,
        coalesce(s.consent, false) as sms_consent,
        coalesce(p.consent, false) as push_consent,
        coalesce(e.consent and (o.channel = 'email' or u.email is not null), false) as email_reachable,
        coalesce(s.consent and (o.channel = 'sms' or u.phone is not null), false) as sms_reachable,
        coalesce(p.consent and (o.channel = 'push' or u.push_token is not null), false) as push_reachable
    from logged as o
    left join recsys.users as u on o.user_id = u.user_id
    left join spans as e
        on
            o.user_id = e.user_id and e.channel = 'email' and o.sent_at >= e.valid_from
            and (e.valid_until is null or o.sent_at < e.valid_until)
    left join spans as s
        on
            o.user_id = s.user_id and s.channel = 'sms' and o.sent_at >= s.valid_from
            and (s.valid_until is null or o.sent_at < s.valid_until)
    left join spans as p
        on
            o.user_id = p.user_id and p.channel = 'push' and o.sent_at >= p.valid_from
            and (p.valid_until is null or o.sent_at < p.valid_until)
)

select * from final
order by
    case when %(by_send)s then sent_at end,
    case when not %(by_send)s then features_as_of end,
    offer_id
