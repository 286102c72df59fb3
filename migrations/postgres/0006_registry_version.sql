-- A version of the port registry, bumped by triggers in the same transaction as every change to it, so
-- a process that keeps the registry in memory (serve's get_port snapshot) can tell cheaply whether
-- another process changed it. Keep in step with migrations/sqlite/0006_registry_version.sql.
CREATE TABLE registry_versions (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO registry_versions (name, version) VALUES ('ports', 0);

CREATE FUNCTION bump_ports_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_versions SET version = version + 1 WHERE name = 'ports';
    RETURN NULL;
END
$$;

CREATE TRIGGER port_allocations_bump AFTER INSERT OR UPDATE OR DELETE ON port_allocations
    FOR EACH STATEMENT EXECUTE FUNCTION bump_ports_version();
CREATE TRIGGER project_port_ranges_bump AFTER INSERT OR UPDATE OR DELETE ON project_port_ranges
    FOR EACH STATEMENT EXECUTE FUNCTION bump_ports_version();
CREATE TRIGGER shared_service_ports_bump AFTER INSERT OR UPDATE OR DELETE ON shared_service_ports
    FOR EACH STATEMENT EXECUTE FUNCTION bump_ports_version();
