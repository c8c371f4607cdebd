-- Tenants, nodes, leases and the audit log. Times are Unix milliseconds, UTC.

CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    foreman_url TEXT    NOT NULL DEFAULT '',
    state       TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A node's BMC password is never stored here: it lives in the secret store.
CREATE TABLE nodes (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    bmc_host    TEXT    NOT NULL DEFAULT '',
    bmc_port    INTEGER NOT NULL DEFAULT 0,
    bmc_user    TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

-- A MAC address belongs to at most one node.
CREATE TABLE node_macs (
    mac     TEXT    PRIMARY KEY,
    node_id INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE
);
CREATE INDEX node_macs_node ON node_macs (node_id);

-- Leases are half-open intervals [start_at, end_at). Two non-cancelled
-- leases of one node never overlap; the store checks that inside the write
-- transaction that inserts or extends a lease.
CREATE TABLE leases (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id    INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    tenant_id  INTEGER NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start_at   INTEGER NOT NULL,
    end_at     INTEGER NOT NULL,
    cancelled  INTEGER NOT NULL DEFAULT 0 CHECK (cancelled IN (0, 1)),
    created_at INTEGER NOT NULL,
    CHECK (end_at > start_at)
);
CREATE INDEX leases_node_time ON leases (node_id, end_at, start_at);
CREATE INDEX leases_tenant_time ON leases (tenant_id, end_at, start_at);
CREATE INDEX leases_end ON leases (end_at);

-- Append-only: who did what, to what, when, and how it ended.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT    NOT NULL DEFAULT '',
    result TEXT    NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
