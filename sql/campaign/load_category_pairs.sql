-- the date's categories and segments, in one hash pass
select
    top_category,
    segment
from recsys.user_features
where as_of = %(day)s
group by 1, 2
