-- Trunk channel limits across nodes (`[trunks.NAME] max_channels`,
-- `max_cps`; see src/channels). Only PostgreSQL nodes read these; a
-- single SQLite node keeps the same state in memory.
--
-- A channel or a place in the queue belongs to a notification's lease:
-- it counts only while that notification's `epoch` is the one stored here
-- and its lease has not run out, so a dead node's channels and places are
-- free once its leases expire, without anyone cleaning up after it.
CREATE TABLE trunk_state (
    trunk TEXT PRIMARY KEY,
    tokens_milli BIGINT NOT NULL DEFAULT 0,
    refilled_ms BIGINT NOT NULL DEFAULT 0,
    backoff_until_ms BIGINT NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE trunk_channels (
    notification_id TEXT PRIMARY KEY,
    trunk TEXT NOT NULL,
    node TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    since_ms BIGINT NOT NULL
);
CREATE INDEX trunk_channels_trunk ON trunk_channels (trunk);

CREATE TABLE trunk_waits (
    notification_id TEXT PRIMARY KEY,
    trunk TEXT NOT NULL,
    node TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    rank INTEGER NOT NULL,
    created_ms BIGINT NOT NULL,
    since_ms BIGINT NOT NULL
);
CREATE INDEX trunk_waits_order ON trunk_waits (trunk, rank, created_ms);

-- What each node's OPTIONS keepalive found, so every node sees a trunk
-- address another node found down. A verdict counts until `until_ms`
-- (database clock): a dead node's word does not stick.
CREATE TABLE trunk_health (
    trunk TEXT NOT NULL,
    address TEXT NOT NULL,
    node TEXT NOT NULL,
    down INTEGER NOT NULL,
    changed_ms BIGINT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (trunk, address, node)
);
