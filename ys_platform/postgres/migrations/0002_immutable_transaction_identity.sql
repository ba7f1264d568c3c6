-- 0002: a transaction's user_id and ts never change once written.
--
-- Downstream, ClickHouse keeps the latest version of each transaction in a ReplacingMergeTree
-- sorted by (user_id, tx_hash) and partitioned by the day of ts, and the topic is keyed by
-- user_id (one Kafka partition per user, where offsets order the versions). A row whose user_id
-- or ts changed would land under another sort key, partition or Kafka partition, and its old
-- version would stay visible there. On chain neither can change; a correction of either is a
-- delete and an insert, which every consumer handles.
CREATE FUNCTION transactions_identity_is_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id IS DISTINCT FROM OLD.user_id OR NEW.ts IS DISTINCT FROM OLD.ts THEN
        RAISE EXCEPTION 'transactions.user_id and transactions.ts cannot change (tx_hash %): delete the row and insert the corrected one', OLD.tx_hash
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER transactions_identity_is_immutable
    BEFORE UPDATE OF user_id, ts ON transactions
    FOR EACH ROW EXECUTE FUNCTION transactions_identity_is_immutable();
