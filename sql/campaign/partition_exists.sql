-- name: the schema-qualified partition name
select to_regclass(%(name)s) is not null
