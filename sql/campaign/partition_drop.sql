drop table {part}
