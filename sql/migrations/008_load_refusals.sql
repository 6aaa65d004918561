-- 008: what load_log and load_rejects now also record (issue 10, no silent loss on load). A file
-- whose rows are all (or mostly, RECSYS_MAX_REJECT_RATE) rejected is refused with its rejects
-- kept, and a header field with a line break is dropped from a loaded user row with a reject
-- naming it. No data changes: the comments say what the rows mean.

comment on column recsys.load_log.status is
'loading: in progress; loaded: committed; refused: nothing of the file was loaded, because it could not be read '
'or because too many of its rows were rejected (message says why; those rejects are in load_rejects).';

comment on column recsys.load_log.message is
'Why a file was refused (for too many rejects: the share, the main reason and the setting to change), or a note.';

comment on table recsys.load_rejects is
'Problems found in input rows, one row per problem: a rejected row (not loaded), or a field dropped from a '
'loaded row (a first name or address with a line break; reason says so).';
