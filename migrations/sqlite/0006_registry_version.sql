-- A version of the port registry, bumped by triggers in the same transaction as every change to it, so
-- a process that keeps the registry in memory (serve's get_port snapshot) can tell cheaply whether
-- another process changed it. Keep in step with migrations/postgres/0006_registry_version.sql.
CREATE TABLE registry_versions (
    name    TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO registry_versions (name, version) VALUES ('ports', 0);

CREATE TRIGGER port_allocations_bump_insert AFTER INSERT ON port_allocations
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER port_allocations_bump_update AFTER UPDATE ON port_allocations
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER port_allocations_bump_delete AFTER DELETE ON port_allocations
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER project_port_ranges_bump_insert AFTER INSERT ON project_port_ranges
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER project_port_ranges_bump_update AFTER UPDATE ON project_port_ranges
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER project_port_ranges_bump_delete AFTER DELETE ON project_port_ranges
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER shared_service_ports_bump_insert AFTER INSERT ON shared_service_ports
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER shared_service_ports_bump_update AFTER UPDATE ON shared_service_ports
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
CREATE TRIGGER shared_service_ports_bump_delete AFTER DELETE ON shared_service_ports
BEGIN UPDATE registry_versions SET version = version + 1 WHERE name = 'ports'; END;
