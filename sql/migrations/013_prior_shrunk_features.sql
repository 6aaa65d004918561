-- 013: user features that keep what the logs say: funnel rates per channel and per offer type,
-- purchase shares, category focus and order value, each a posterior mean under a population prior
-- fitted to the users of the date (empirical Bayes), and the preferred and release local hours.
-- sql/features/user_features.sql defines them. Feature dates built before this migration hold
-- null in every new column until rebuilt (`recsys features --backfill`); a rebuilt date fills
-- them all (local_release_hour and preferred_local_hour can stay null, see their comments).

alter table recsys.user_features
add column email_open_rate double precision,
add column sms_open_rate double precision,
add column push_open_rate double precision,
add column email_click_rate double precision,
add column sms_click_rate double precision,
add column push_click_rate double precision,
add column discount_click_rate double precision,
add column free_shipping_click_rate double precision,
add column recommendation_click_rate double precision,
add column bundle_click_rate double precision,
add column discount_convert_rate double precision,
add column free_shipping_convert_rate double precision,
add column recommendation_convert_rate double precision,
add column bundle_convert_rate double precision,
add column organic_discount_share double precision,
add column offer_discount_share double precision,
add column organic_free_shipping_share double precision,
add column offer_free_shipping_share double precision,
add column category_focus_posterior double precision,
add column order_value double precision,
add column preferred_local_hour double precision,
add column preferred_hour_certainty double precision,
add column local_release_hour double precision;

comment on column recsys.user_features.email_open_rate is
'Opens per email offer (outcome known), posterior mean (x + kappa m) / (n + kappa) under the date''s Beta population prior; null before migration 013.';
comment on column recsys.user_features.sms_open_rate is
'Opens per sms offer (outcome known), posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.push_open_rate is
'Opens per push offer (outcome known), posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.email_click_rate is
'Clicks per opened email offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.sms_click_rate is
'Clicks per opened sms offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.push_click_rate is
'Clicks per opened push offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.discount_click_rate is
'Clicks per opened discount offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.free_shipping_click_rate is
'Clicks per opened free-shipping offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.recommendation_click_rate is
'Clicks per opened recommendation offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.bundle_click_rate is
'Clicks per opened bundle offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.discount_convert_rate is
'Conversions per clicked discount offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.free_shipping_convert_rate is
'Conversions per clicked free-shipping offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.recommendation_convert_rate is
'Conversions per clicked recommendation offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.bundle_convert_rate is
'Conversions per clicked bundle offer, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.organic_discount_share is
'Share of the window''s organic purchases (no message brought the session) that used a discount, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.offer_discount_share is
'Share of the window''s offer-driven purchases (a message brought the session) that used a discount, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.organic_free_shipping_share is
'Share of the window''s organic purchases that used free shipping, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.offer_free_shipping_share is
'Share of the window''s offer-driven purchases that used free shipping, posterior mean under the date''s Beta population prior.';
comment on column recsys.user_features.category_focus_posterior is
'Largest posterior mean share of the user''s category views under the date''s Dirichlet(kappa x population shares) prior.';
comment on column recsys.user_features.order_value is
'Shrunk typical order value: exp(posterior mean of ln(1 + amount)) - 1 under the date''s normal population prior; 0 when nobody bought.';
comment on column recsys.user_features.preferred_local_hour is
'Circular mean local start hour [0, 24) of the user''s organic sessions in the window, the population direction as one pseudo-session.';
comment on column recsys.user_features.preferred_hour_certainty is
'Resultant length of the user''s organic session start hours (mean resultant length x sessions); 0 without one.';
comment on column recsys.user_features.local_release_hour is
'Circular mean local hour [0, 24) of the offer releases in the window to users of the user''s time zone; null with none.';
