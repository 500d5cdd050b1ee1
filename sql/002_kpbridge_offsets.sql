-- The next offset to read per (group, topic, partition), written in the same
-- transaction as the events it covers: the database, not Kafka, says where a
-- partition resumes, which makes a crash between COMMIT and the Kafka offset
-- commit harmless.
CREATE TABLE IF NOT EXISTS kpbridge_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
