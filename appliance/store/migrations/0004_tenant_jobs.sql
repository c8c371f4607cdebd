-- Tenant onboarding and offboarding jobs, step by step. At most one
-- running job per tenant: the partial unique index makes two concurrent
-- onboardings of one tenant one job.
CREATE TABLE tenant_jobs (
    id          INTEGER PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('onboard', 'offboard')),
    state       TEXT    NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    options     TEXT    NOT NULL DEFAULT '',
    error       TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX tenant_jobs_one_running ON tenant_jobs (tenant) WHERE state = 'running';
CREATE INDEX tenant_jobs_tenant ON tenant_jobs (tenant, id);

CREATE TABLE tenant_job_steps (
    job_id      INTEGER NOT NULL REFERENCES tenant_jobs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    detail      TEXT    NOT NULL DEFAULT '',
    started_at  INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
