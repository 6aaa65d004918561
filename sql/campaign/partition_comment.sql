-- noqa below: the linter parses no parameter as the comment text
comment on table {part} is %(comment)s  -- noqa: PRS
