-- Secret rotations are audited beside config versions, under the config id
-- `secret:<secret id>`, and belong to no config version: the audit row's version may
-- be empty (a NULL skips the foreign key to config_versions).
ALTER TABLE config_audit ALTER COLUMN version DROP NOT NULL;
