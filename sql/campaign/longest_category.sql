-- the date's longest category name: the templates are checked with it before anything is written
select top_category from recsys.user_features
where as_of = %(day)s
group by top_category
order by max(char_length(top_category)) desc
limit 1
