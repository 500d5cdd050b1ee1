-- Records that could not become events, kept byte for byte with the reason.
CREATE TABLE IF NOT EXISTS kpbridge_dead_letters (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    key         bytea,
    value       bytea,
    headers     jsonb       NOT NULL DEFAULT '{}',
    reason      text        NOT NULL,
    sqlstate    text,
    detail      text,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS kpbridge_dead_letters_source
    ON kpbridge_dead_letters (topic, partition, "offset");
