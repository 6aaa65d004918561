-- 007: bounds of the sender protocol. record_offer_event accepts events only for offers a sender
-- claimed, at times from the first claim on (campaign_offers.first_claimed_at, kept by a trigger
-- for every writer); a hard bounce suppresses the address the offer was sent to
-- (address_suppressions, campaign_offers.claimed_address) until the user's address changes. The
-- functions live in sql/functions/30_sender_protocol.sql.

alter table recsys.campaign_offers add column first_claimed_at timestamptz;
alter table recsys.campaign_offers add column claimed_address text;
comment on column recsys.campaign_offers.first_claimed_at is
'When a sender first claimed it (or, for offers marked sent without a claim, when it was sent); '
'null = never claimed, and record_offer_event refuses events for it. Set once, by a trigger.';
comment on column recsys.campaign_offers.claimed_address is
'The recipient''s address on the channel as handed to the sender at the latest claim: what a '
'bounced event suppresses.';

-- Offers claimed before this migration: claimed_at is the latest claim. With one attempt it is the
-- first; after several, the first claim is unknown but not before scheduled_at (no claim can be).
update recsys.campaign_offers
set
    first_claimed_at = case
        when attempts > 1 then scheduled_at
        else least(claimed_at, sent_at)
    end
where claimed_at is not null or sent_at is not null;

create function recsys.keep_first_claimed_at()
returns trigger
language plpgsql
as $$
begin
    new.first_claimed_at := least(new.claimed_at, new.sent_at);
    return new;
end;
$$;
comment on function recsys.keep_first_claimed_at() is
'Trigger of campaign_offers: the first time an offer gets a claim (or send) time, first_claimed_at '
'takes it; later claims leave it alone. Every writer (claim_offers, the simulator, an operator) is covered.';

-- BEFORE ROW on the partitioned table: cloned onto every partition, attached ones included
create trigger campaign_offers_first_claim
before insert or update on recsys.campaign_offers
for each row
when (new.first_claimed_at is null and (new.claimed_at is not null or new.sent_at is not null))
execute function recsys.keep_first_claimed_at();

create table recsys.address_suppressions (
    channel text not null check (channel in ('email', 'sms', 'push')),
    address text not null,
    reason text not null,
    offer_id bigint,
    user_id bigint,
    suppressed_at timestamptz not null,
    recorded_at timestamptz not null default clock_timestamp(),
    primary key (channel, address)
);
comment on table recsys.address_suppressions is
'Addresses no offer is sent to (claim_offers cancels offers to them): a bounced event suppresses the '
'address it was sent to. Keyed by address, not user: a user whose address changes is reached again '
'at the new one; deleting a row lifts the suppression.';
comment on column recsys.address_suppressions.channel is 'email, sms or push.';
comment on column recsys.address_suppressions.address is
'The address as recsys.normalized_address keeps it: email lower-cased, phone without spaces, '
'dots, dashes and brackets, push token trimmed.';
comment on column recsys.address_suppressions.reason is 'Why: bounced (a hard bounce reported for offer_id).';
comment on column recsys.address_suppressions.offer_id is 'The offer whose report suppressed the address.';
comment on column recsys.address_suppressions.user_id is 'The user the address belonged to then.';
comment on column recsys.address_suppressions.suppressed_at is 'When the bounce happened (the event''s event_at).';
comment on column recsys.address_suppressions.recorded_at is 'When it was recorded.';
