-- What keeps one tenant, or one spec editor, from changing what another environment
-- runs: who holds each config id, the approval policy each environment answered to
-- when its live version went live, and which environment each projected object
-- belongs to.

-- A config id belongs to one ConfigEntry. Every read and write of its versions,
-- applied state and Consul keys checks the claim first.
CREATE TABLE config_claims (
  config_id VARCHAR(255) PRIMARY KEY,
  namespace VARCHAR(63) NOT NULL,
  name VARCHAR(253) NOT NULL,
  uid VARCHAR(64) NOT NULL,
  claimed_at TIMESTAMP NOT NULL
);
-- Config ids recorded before claims existed belong to the entry that recorded their
-- first version (its uid is learnt at its next reconcile).
INSERT INTO config_claims (config_id, namespace, name, uid, claimed_at)
SELECT DISTINCT ON (config_id)
  config_id,
  split_part(metadata ->> 'owner', '/', 1),
  split_part(metadata ->> 'owner', '/', 2),
  '',
  created_at
FROM config_versions
WHERE metadata ? 'owner'
ORDER BY config_id, version;

-- The approval policy an environment answered to when its live version went live:
-- a spec (edited, or deleted and created again) that asks for less answers to this
-- one too, until a change approved under it lowers it. NULL policy: no approval.
-- Kept when an entry is deleted, whatever its deletionPolicy.
CREATE TABLE approval_floors (
  config_id VARCHAR(255) NOT NULL,
  environment VARCHAR(50) NOT NULL,
  policy JSONB,
  version INTEGER NOT NULL,
  recorded_at TIMESTAMP NOT NULL,
  PRIMARY KEY (config_id, environment)
);

-- An object projected for an environment that needs approval stays that
-- environment's: no other environment, of this config or another, writes it.
CREATE TABLE projection_bindings (
  kind VARCHAR(16) NOT NULL,
  namespace VARCHAR(63) NOT NULL,
  name VARCHAR(253) NOT NULL,
  config_id VARCHAR(255) NOT NULL,
  environment VARCHAR(50) NOT NULL,
  bound_at TIMESTAMP NOT NULL,
  PRIMARY KEY (kind, namespace, name)
);

-- Columns filled from what users write are wide enough for what the API allows:
-- user names (service accounts run to 340 characters), AWS ARNs (2,048), change ids
-- (namespace, name and uid). The operator bounds each value to its column.
ALTER TABLE config_versions ALTER COLUMN created_by TYPE VARCHAR(1024);
ALTER TABLE config_audit ALTER COLUMN actor TYPE VARCHAR(1024);
ALTER TABLE approval_workflows ALTER COLUMN requested_by TYPE VARCHAR(1024);
ALTER TABLE approval_workflows ALTER COLUMN change_id TYPE VARCHAR(512);
ALTER TABLE secret_rotation_policies ALTER COLUMN secret_id TYPE VARCHAR(2048);
ALTER TABLE secret_rotation_policies ALTER COLUMN rotation_lambda TYPE VARCHAR(2048);
