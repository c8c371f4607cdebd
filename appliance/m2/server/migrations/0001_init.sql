-- The metadata as first released. IF NOT EXISTS: databases made before
-- migrations (user_version 0) already hold exactly these tables.
-- Rows are written in state 'creating' before their volume exists and
-- become 'ready' after, so a crash leaves a row that start-up cleans,
-- never a volume nobody knows.
CREATE TABLE IF NOT EXISTS images (
    name       TEXT    PRIMARY KEY,
    size       INTEGER NOT NULL DEFAULT 0,
    allocated  INTEGER NOT NULL DEFAULT 0,
    sha256     TEXT    NOT NULL DEFAULT '',
    state      TEXT    NOT NULL CHECK (state IN ('creating', 'ready')),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS disks (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    project           TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    node              TEXT    NOT NULL DEFAULT '',
    initiator         TEXT    NOT NULL DEFAULT '',
    boot_token_sha256 TEXT    NOT NULL DEFAULT '',
    state             TEXT    NOT NULL CHECK (state IN ('creating', 'ready')),
    created_at        INTEGER NOT NULL,
    UNIQUE (project, name)
);
CREATE UNIQUE INDEX IF NOT EXISTS disks_node ON disks (node) WHERE node != '';
CREATE UNIQUE INDEX IF NOT EXISTS disks_boot_token ON disks (boot_token_sha256) WHERE boot_token_sha256 != '';
CREATE TABLE IF NOT EXISTS snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    disk       TEXT    NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,
    state      TEXT    NOT NULL CHECK (state IN ('creating', 'ready')),
    created_at INTEGER NOT NULL,
    UNIQUE (project, name)
);
CREATE TABLE IF NOT EXISTS project_tokens (
    project      TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE
);
