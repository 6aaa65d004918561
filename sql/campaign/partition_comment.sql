-- exempt from the linter's parser on the next line: it reads no parameter as the comment text
comment on table {part} is %(comment)s  -- noqa: PRS
