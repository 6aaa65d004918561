-- 009: what two load_log columns now also hold (issue 10). An input file that cannot be read is
-- recorded as refused with a checksum placeholder, and sheet_counts counts the rows with a field
-- dropped. No data changes: the comments say what the values mean.

comment on column recsys.load_log.file_sha256 is
'sha256 of the file bytes: a file is known by this, never loaded twice. A file that could not be read '
'(refused) has the placeholder ''unreadable: no checksum'', which no file''s sha256 equals.';

comment on column recsys.load_log.sheet_counts is
'Per sheet (events/users/offers/feedback): read, loaded, rejected, duplicate, and dropped (loaded rows '
'with a field dropped, each in load_rejects).';
