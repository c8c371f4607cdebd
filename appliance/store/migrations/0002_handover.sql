-- Hardware leases: who may drive each node's power now, the embedded
-- allocator's project membership, and the journaled handovers between them.

-- The tenant that currently sees the node's real power and may drive it:
-- set by a handover's activate step, cleared by its fence step. No row, or
-- a NULL tenant, means nobody: every tenant reads "off".
CREATE TABLE node_holders (
    node_id   INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    tenant_id INTEGER REFERENCES tenants (id) ON DELETE SET NULL
);

-- Project membership kept by the embedded allocator (HIL keeps its own).
CREATE TABLE allocations (
    node_id INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    project TEXT    NOT NULL
);

-- One handover per lease boundary of a node. Tenant names are copied so the
-- history survives a tenant's removal.
CREATE TABLE handovers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id     INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    from_tenant TEXT    NOT NULL DEFAULT '',
    to_tenant   TEXT    NOT NULL DEFAULT '',
    step        TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('running', 'stuck', 'done')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- At most one unfinished handover per node.
CREATE UNIQUE INDEX handovers_open ON handovers (node_id) WHERE status != 'done';
CREATE INDEX handovers_status ON handovers (status);

-- Every step's intent (written before acting) and outcome (after).
CREATE TABLE handover_journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    handover_id INTEGER NOT NULL REFERENCES handovers (id) ON DELETE CASCADE,
    step        TEXT    NOT NULL,
    phase       TEXT    NOT NULL CHECK (phase IN ('intent', 'done', 'failed', 'skipped', 'retry')),
    at          INTEGER NOT NULL,
    detail      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX handover_journal_handover ON handover_journal (handover_id, id);

-- Per-tenant broker credential (SHA-256 of the token; the token itself is
-- shown once and never stored).
ALTER TABLE tenants ADD COLUMN broker_token_sha256 TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX tenants_broker_token ON tenants (broker_token_sha256) WHERE broker_token_sha256 != '';
