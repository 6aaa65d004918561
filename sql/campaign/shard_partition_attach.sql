-- exempt from the linter's parser on the next line: it reads no hash partition bound
alter table {date_part} attach partition {part} for values with (modulus %(shards)s, remainder %(shard)s)  -- noqa: PRS
