-- supervisor: key check values (SQLite). Keep in step with migrations/postgres/0002_key_check.sql.
--
-- One row per key version: a known plaintext sealed (AES-256-GCM) with that version's key. A key is
-- verified against it with certainty, whatever state the secrets are in, so one corrupt secret never
-- blocks the vault and a wrong key is recognised before anything is written. Vaults created before this
-- table get their row on the first successful verification against their secrets (see secrets/vault.rs).
CREATE TABLE secret_key_checks (
    key_version INTEGER PRIMARY KEY CHECK (key_version BETWEEN 1 AND 255),
    check_value BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
