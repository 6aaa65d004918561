select exists(
    select from recsys.user_features
    where as_of = %(day)s
)
