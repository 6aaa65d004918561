-- 003: behaviour that says when a user reads messages and how focused their interest is, so the
-- policy can choose an offer's timing and whether a recommendation fits. Existing feature dates
-- get the neutral values; rebuilding a date computes them.

alter table recsys.user_features add column morning_share double precision not null default 1.0 / 3;
alter table recsys.user_features add column evening_share double precision not null default 1.0 / 3;
alter table recsys.user_features add column category_focus double precision not null default 0;

comment on column recsys.user_features.morning_share is
'Share of the window''s sessions that started 05:00-10:59 in the user''s time zone, smoothed: (m + 1) / (sessions + 3).';
comment on column recsys.user_features.evening_share is
'Share of the window''s sessions that started 17:00-04:59 in the user''s time zone, smoothed: (e + 1) / (sessions + 3).';
comment on column recsys.user_features.category_focus is
'Share of the window''s category interest (views + 3 carts + 5 purchases) in the top category; 0 with none.';
