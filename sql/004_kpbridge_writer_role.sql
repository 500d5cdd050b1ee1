-- Least privilege: kpbridge needs to read and append, nothing more.
--
-- kpbridge_writer may SELECT and INSERT the event, offset and dead-letter
-- tables.  Moving an offsets row is an UPDATE, so it goes through
-- kpbridge_advance_offset(), a SECURITY DEFINER function that only ever
-- moves a row from the position its caller last saw (the fence), and
-- raises SQLSTATE KB001 when the row holds anything else.
--
-- Grant the role to the login kpbridge connects as:
--     CREATE ROLE bridge LOGIN PASSWORD '...' IN ROLE kpbridge_writer;
DO $$
BEGIN
    CREATE ROLE kpbridge_writer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- roles are cluster-wide: another database created it already
END
$$;

CREATE OR REPLACE FUNCTION kpbridge_advance_offset(
    p_group text, p_topic text, p_partition integer,
    p_from bigint, p_to bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF p_from < 0 THEN
        INSERT INTO kpbridge_offsets (group_id, topic, partition, next_offset)
        VALUES (p_group, p_topic, p_partition, p_to)
        ON CONFLICT DO NOTHING;
    ELSE
        UPDATE kpbridge_offsets
           SET next_offset = p_to, updated_at = now()
         WHERE group_id = p_group AND topic = p_topic
           AND partition = p_partition AND next_offset = p_from;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: %/% [%] is no longer at offset %',
            p_group, p_topic, p_partition, p_from
            USING ERRCODE = 'KB001';
    END IF;
END
$$;

-- The version trigger locks the stream's latest row FOR UPDATE, which
-- needs UPDATE on the table; it runs as its owner so that an appending role
-- needs no UPDATE right of its own.
ALTER FUNCTION eventcore_assign_version() SECURITY DEFINER;

-- A SECURITY DEFINER function must not find its tables through the
-- caller's search_path: pin both to the schema the migration ran in.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION kpbridge_advance_offset(text, text, integer,'
                   ' bigint, bigint) SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION eventcore_assign_version()'
                   ' SET search_path = %I, pg_temp', current_schema());
END
$$;

REVOKE ALL ON FUNCTION kpbridge_advance_offset(text, text, integer, bigint,
                                               bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kpbridge_advance_offset(text, text, integer, bigint,
                                                  bigint) TO kpbridge_writer;
GRANT SELECT, INSERT ON eventcore_events, kpbridge_dead_letters
    TO kpbridge_writer;
GRANT SELECT ON kpbridge_offsets, kpbridge_migrations TO kpbridge_writer;
GRANT USAGE ON SEQUENCE kpbridge_dead_letters_id_seq TO kpbridge_writer;
