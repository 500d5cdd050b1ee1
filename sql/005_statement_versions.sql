-- Versions without the per-row trigger, for a writer that declares it
-- brings its own (postgres.versioning: statement).
--
-- The seed's row trigger costs about 40% of insert throughput: a plpgsql
-- call, an index probe and a row lock per event.  In statement mode
-- kpbridge's INSERT carries each row's version, computed from the stream's
-- head (cached by kpbridge from what its own committed statements
-- returned, or looked up by the statement) plus the row's place in its
-- batch, and the transaction says so with
--     SET LOCAL eventcore.explicit_versions = on
-- The trigger then skips rows that arrive with a version.  Every other
-- writer -- eventcore's own, and kpbridge in its default trigger mode --
-- is unchanged: without the setting the trigger assigns every version as
-- before, whatever the INSERT supplied.
--
-- Why the guarantees hold:
--   * a race between two writers of one stream ends at the unique index on
--     (stream_id, stream_version): the later writer waits for the earlier
--     one's commit and fails with 23505; kpbridge then forgets its cached
--     heads and replays the flush through the trigger, never dead-letters;
--   * gap-free: kpbridge numbers every row of a stream batch from the head,
--     and caches a head only after the transaction that wrote it committed;
--     a head that is too low collides with the index, and one cannot be too
--     high because events are never deleted;
--   * expected versions: a flush that carries them goes through the
--     trigger, which checks them.
DROP TRIGGER IF EXISTS eventcore_events_assign_version ON eventcore_events;
CREATE TRIGGER eventcore_events_assign_version
    BEFORE INSERT ON eventcore_events
    FOR EACH ROW
    WHEN (NEW.stream_version IS NULL
          OR current_setting('eventcore.explicit_versions', true)
             IS DISTINCT FROM 'on')
    EXECUTE FUNCTION eventcore_assign_version();
