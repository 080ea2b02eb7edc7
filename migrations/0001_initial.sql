-- The seed's storage layout: versions, their audit trail, applied state per
-- environment, approval workflows and rotation policies.

CREATE TABLE config_versions (
  id UUID PRIMARY KEY,
  config_id VARCHAR(255) NOT NULL,
  version INTEGER NOT NULL CHECK (version > 0),
  config JSONB NOT NULL,
  overrides JSONB,
  checksum VARCHAR(64) NOT NULL,
  metadata JSONB NOT NULL,
  ab_test JSONB,
  canary JSONB,
  feature_flags JSONB,
  created_at TIMESTAMP NOT NULL,
  created_by VARCHAR(255) NOT NULL,
  UNIQUE (config_id, version)
);

CREATE TABLE config_audit (
  id UUID PRIMARY KEY,
  config_id VARCHAR(255) NOT NULL,
  version INTEGER NOT NULL,
  actor VARCHAR(255) NOT NULL,
  timestamp TIMESTAMP NOT NULL,
  message TEXT,
  changes JSONB,
  FOREIGN KEY (config_id, version) REFERENCES config_versions (config_id, version)
);

CREATE TABLE config_applied_state (
  config_id VARCHAR(255) NOT NULL,
  environment VARCHAR(50) NOT NULL,
  version INTEGER NOT NULL,
  checksum VARCHAR(64) NOT NULL,
  applied_at TIMESTAMP NOT NULL,
  PRIMARY KEY (config_id, environment)
);

CREATE TABLE approval_workflows (
  id UUID PRIMARY KEY,
  change_id VARCHAR(255) UNIQUE NOT NULL,
  config_id VARCHAR(255) NOT NULL,
  proposed_version JSONB NOT NULL,
  requested_by VARCHAR(255) NOT NULL,
  requested_at TIMESTAMP NOT NULL,
  approvers TEXT[] NOT NULL,
  approvals JSONB,
  status VARCHAR(20) NOT NULL,
  auto_approve_for TEXT[]
);

CREATE TABLE secret_rotation_policies (
  secret_id VARCHAR(255) PRIMARY KEY,
  rotation_interval_days INTEGER NOT NULL,
  rotation_lambda VARCHAR(255),
  notify_on_rotation TEXT[],
  grace_period_days INTEGER NOT NULL DEFAULT 7,
  last_rotated_at TIMESTAMP,
  next_rotation_at TIMESTAMP
);

-- The audit trail is read per config id, newest first.
CREATE INDEX config_audit_by_config ON config_audit (config_id, timestamp DESC);
-- The latest version recorded from a ConfigEntry's spec decides whether a spec edit
-- proposes a new version.
CREATE INDEX config_versions_by_source ON config_versions (config_id, (metadata ->> 'source'), version DESC);
CREATE INDEX approval_workflows_by_config ON approval_workflows (config_id, status);
