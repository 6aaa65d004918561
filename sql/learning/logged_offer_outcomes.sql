-- the outcome columns recsys.v_logged_offers has (opened, clicked, converted, unsubscribed: which exist)
select column_name from information_schema.columns
where table_schema = 'recsys' and table_name = 'v_logged_offers'
