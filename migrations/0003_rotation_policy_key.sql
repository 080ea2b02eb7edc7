-- A row per SecretRotationPolicy (`namespace/name`), not per secret id: in-cluster
-- secrets are named per namespace, so two namespaces may each have a `db` secret.
ALTER TABLE secret_rotation_policies ADD COLUMN policy TEXT;
ALTER TABLE secret_rotation_policies ADD COLUMN provider TEXT;
-- Rows written before this migration name no policy; the next rotation of their policy
-- writes a row of its own. These are removed rather than kept under a made-up policy:
-- every rotation they recorded is in config_audit.
DELETE FROM secret_rotation_policies;
ALTER TABLE secret_rotation_policies DROP CONSTRAINT secret_rotation_policies_pkey;
ALTER TABLE secret_rotation_policies ALTER COLUMN policy SET NOT NULL;
ALTER TABLE secret_rotation_policies ALTER COLUMN provider SET NOT NULL;
ALTER TABLE secret_rotation_policies ADD PRIMARY KEY (policy);
CREATE INDEX secret_rotation_policies_by_secret ON secret_rotation_policies (secret_id);
