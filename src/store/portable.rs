//! Repositories whose SQL is the same on SQLite and PostgreSQL, written once and expanded for each
//! backend's store (each expansion is type-checked against its own driver). Both dialects accept `$n`
//! placeholders, `ON CONFLICT … DO UPDATE`, `RETURNING` and `substr`/`length`.

macro_rules! portable_repos {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::HealthRepo for $store {
            async fn ping(&self) -> $crate::store::Result<()> {
                self.check_location().await?;
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("reach the database"))?;
                Ok(())
            }

            async fn writable(&self) -> $crate::store::Result<()> {
                self.check_writable().await
            }

            async fn running_tasks(&self) -> $crate::store::Result<i64> {
                sqlx::query_scalar("SELECT count(*) FROM task_executions WHERE status = 'running'")
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("count running task timers"))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::SecretRepo for $store {
            async fn put_secret(&self, row: &$crate::store::SecretRow) -> $crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO secrets (path, scope, project, service, description, ciphertext, key_version,
                                          created_at, updated_at, expires_at, rotation_required)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (path) DO UPDATE SET
                         description = excluded.description,
                         ciphertext = excluded.ciphertext,
                         key_version = excluded.key_version,
                         updated_at = excluded.updated_at,
                         expires_at = excluded.expires_at,
                         rotation_required = excluded.rotation_required",
                )
                .bind(&row.path)
                .bind(&row.scope)
                .bind(&row.project)
                .bind(&row.service)
                .bind(&row.description)
                .bind(&row.ciphertext)
                .bind(row.key_version)
                .bind(row.created_at)
                .bind(row.updated_at)
                .bind(row.expires_at)
                .bind(row.rotation_required)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("store a secret"))?;
                Ok(())
            }

            async fn get_secret(&self, path: &str) -> $crate::store::Result<Option<$crate::store::SecretRow>> {
                sqlx::query_as("SELECT * FROM secrets WHERE path = $1")
                    .bind(path)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read a secret"))
            }

            async fn get_secrets(&self, paths: &[&str]) -> $crate::store::Result<Vec<$crate::store::SecretRow>> {
                if paths.is_empty() {
                    return Ok(Vec::new());
                }
                self.fetch_secrets(paths).await
            }

            async fn list_secrets(
                &self,
                filter: &$crate::store::SecretFilter,
            ) -> $crate::store::Result<Vec<$crate::store::SecretMeta>> {
                sqlx::query_as(
                    "SELECT path, scope, project, service, description, key_version, created_at, updated_at,
                            last_accessed_at, access_count, expires_at, rotation_required
                     FROM secrets
                     WHERE ($1 IS NULL OR scope = $1)
                       AND ($2 IS NULL OR project = $2)
                       AND ($3 IS NULL OR substr(path, 1, length($3)) = $3)
                     ORDER BY path",
                )
                .bind(filter.scope.map(|s| s.as_str()))
                .bind(filter.project.as_deref())
                .bind(filter.path_prefix.as_deref())
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("list secrets"))
            }

            async fn delete_secret(&self, path: &str) -> $crate::store::Result<bool> {
                let done = sqlx::query("DELETE FROM secrets WHERE path = $1")
                    .bind(path)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("delete a secret"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn record_access(&self, events: &[$crate::store::AccessEvent]) -> $crate::store::Result<()> {
                if events.is_empty() {
                    return Ok(());
                }
                // Written per backend: a batch must cost a constant number of statements however many
                // events it holds, which takes dialect-specific SQL (arrays / JSON).
                self.write_access_events(events).await
            }

            async fn access_log(
                &self,
                path: Option<&str>,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::AccessEvent>> {
                sqlx::query_as(
                    "SELECT path, action, actor, outcome, at FROM secret_access_log
                     WHERE ($1 IS NULL OR path = $1) ORDER BY id DESC LIMIT $2",
                )
                .bind(path)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("read the secret access log"))
            }

            async fn all_secrets(&self) -> $crate::store::Result<Vec<$crate::store::SecretRow>> {
                sqlx::query_as("SELECT * FROM secrets ORDER BY path")
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read all secrets"))
            }

            async fn sample_secrets(&self, limit: i64) -> $crate::store::Result<Vec<$crate::store::SecretRow>> {
                sqlx::query_as("SELECT * FROM secrets ORDER BY updated_at DESC, path LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read a sample of secrets"))
            }

            async fn import_secrets(&self, rows: &[$crate::store::SecretRow]) -> $crate::store::Result<()> {
                let op = "import secrets";
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::query(op))?;
                for row in rows {
                    sqlx::query(
                        "INSERT INTO secrets (path, scope, project, service, description, ciphertext, key_version,
                                              created_at, updated_at, last_accessed_at, access_count, expires_at,
                                              rotation_required)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(&row.path)
                    .bind(&row.scope)
                    .bind(&row.project)
                    .bind(&row.service)
                    .bind(&row.description)
                    .bind(&row.ciphertext)
                    .bind(row.key_version)
                    .bind(row.created_at)
                    .bind(row.updated_at)
                    .bind(row.last_accessed_at)
                    .bind(row.access_count)
                    .bind(row.expires_at)
                    .bind(row.rotation_required)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation()) {
                            $crate::store::StoreError::Conflict(format!(
                                "secret {} already exists; nothing was imported", row.path
                            ))
                        } else {
                            $crate::store::StoreError::Query { op, source: e }
                        }
                    })?;
                }
                tx.commit().await.map_err($crate::store::StoreError::query(op))
            }

            async fn replace_ciphertexts(
                &self,
                rows: &[(String, Vec<u8>, i32)],
                check: &$crate::store::KeyCheck,
            ) -> $crate::store::Result<()> {
                let op = "re-encrypt secrets";
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::query(op))?;
                sqlx::query("DELETE FROM secret_key_checks")
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::query(op))?;
                sqlx::query("INSERT INTO secret_key_checks (key_version, check_value, created_at) VALUES ($1, $2, $3)")
                    .bind(check.key_version)
                    .bind(&check.check_value)
                    .bind(check.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::query(op))?;
                for (path, ciphertext, version) in rows {
                    let done = sqlx::query("UPDATE secrets SET ciphertext = $2, key_version = $3 WHERE path = $1")
                        .bind(path)
                        .bind(ciphertext)
                        .bind(*version)
                        .execute(&mut *tx)
                        .await
                        .map_err($crate::store::StoreError::query(op))?;
                    if done.rows_affected() != 1 {
                        return Err($crate::store::StoreError::Conflict(format!(
                            "secret {path} disappeared during re-encryption; nothing was changed"
                        )));
                    }
                }
                tx.commit().await.map_err($crate::store::StoreError::query(op))
            }

            async fn key_checks(&self) -> $crate::store::Result<Vec<$crate::store::KeyCheck>> {
                sqlx::query_as("SELECT key_version, check_value, created_at FROM secret_key_checks ORDER BY key_version")
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read the key check values"))
            }

            async fn insert_key_check(&self, check: &$crate::store::KeyCheck) -> $crate::store::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO secret_key_checks (key_version, check_value, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key_version) DO NOTHING",
                )
                .bind(check.key_version)
                .bind(&check.check_value)
                .bind(check.created_at)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("record a key check value"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn reset_key_checks(&self, check: &$crate::store::KeyCheck) -> $crate::store::Result<()> {
                let op = "replace the key check values";
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::query(op))?;
                // Caveat: a secret written at this very moment by another key's holder (two writers racing
                // to fill an empty vault) can slip in after the count; it stays readable with its own key.
                sqlx::query("DELETE FROM secret_key_checks")
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::query(op))?;
                let secrets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::query(op))?;
                if secrets > 0 {
                    return Err($crate::store::StoreError::Conflict(format!(
                        "the vault holds {secrets} secret(s); its key check values stay as they are"
                    )));
                }
                sqlx::query("INSERT INTO secret_key_checks (key_version, check_value, created_at) VALUES ($1, $2, $3)")
                    .bind(check.key_version)
                    .bind(&check.check_value)
                    .bind(check.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::StoreError::query(op))?;
                tx.commit().await.map_err($crate::store::StoreError::query(op))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::PortRepo for $store {
            async fn port_registry(&self, host: &str) -> $crate::store::Result<$crate::store::PortRegistry> {
                let op = "read the port registry";
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::query(op))?;
                let ranges = sqlx::query_as(
                    "SELECT host, project, start_port, end_port FROM project_port_ranges WHERE host = $1 ORDER BY start_port",
                )
                .bind(host)
                .fetch_all(&mut *tx)
                .await
                .map_err($crate::store::StoreError::query(op))?;
                let allocations = sqlx::query_as(
                    "SELECT host, project, service, port FROM port_allocations WHERE host = $1 ORDER BY port",
                )
                .bind(host)
                .fetch_all(&mut *tx)
                .await
                .map_err($crate::store::StoreError::query(op))?;
                let shared = sqlx::query_as(
                    "SELECT host, name, port FROM shared_service_ports WHERE host = $1 ORDER BY port",
                )
                .bind(host)
                .fetch_all(&mut *tx)
                .await
                .map_err($crate::store::StoreError::query(op))?;
                tx.commit().await.map_err($crate::store::StoreError::query(op))?;
                Ok($crate::store::PortRegistry { ranges, allocations, shared })
            }

            async fn ports_version(&self) -> $crate::store::Result<i64> {
                let version: (i64,) = sqlx::query_as("SELECT version FROM registry_versions WHERE name = 'ports'")
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read the port registry's version"))?;
                Ok(version.0)
            }

            async fn port_allocation(
                &self,
                host: &str,
                project: &str,
                service: &str,
            ) -> $crate::store::Result<Option<$crate::store::PortAllocation>> {
                sqlx::query_as(
                    "SELECT host, project, service, port FROM port_allocations WHERE host = $1 AND project = $2 AND service = $3",
                )
                .bind(host)
                .bind(project)
                .bind(service)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("read a port allocation"))
            }

            async fn insert_port_range(&self, r: &$crate::store::PortRange) -> $crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO project_port_ranges (host, project, start_port, end_port, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&r.host)
                .bind(&r.project)
                .bind(r.start_port)
                .bind(r.end_port)
                .bind(chrono::Utc::now())
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("assign a project port block"))?;
                Ok(())
            }

            async fn move_port_range(&self, r: &$crate::store::PortRange) -> $crate::store::Result<bool> {
                let done = sqlx::query(
                    "UPDATE project_port_ranges SET start_port = $3, end_port = $4 WHERE host = $1 AND project = $2",
                )
                .bind(&r.host)
                .bind(&r.project)
                .bind(r.start_port)
                .bind(r.end_port)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("move a project port block"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_port_range(&self, host: &str, project: &str) -> $crate::store::Result<bool> {
                let done = sqlx::query("DELETE FROM project_port_ranges WHERE host = $1 AND project = $2")
                    .bind(host)
                    .bind(project)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("release a project port block"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_port_allocation(&self, a: &$crate::store::PortAllocation) -> $crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO port_allocations (host, project, service, port, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&a.host)
                .bind(&a.project)
                .bind(&a.service)
                .bind(a.port)
                .bind(chrono::Utc::now())
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("allocate a port"))?;
                Ok(())
            }

            async fn update_port_allocation(&self, a: &$crate::store::PortAllocation) -> $crate::store::Result<bool> {
                let done = sqlx::query(
                    "UPDATE port_allocations SET port = $4 WHERE host = $1 AND project = $2 AND service = $3",
                )
                .bind(&a.host)
                .bind(&a.project)
                .bind(&a.service)
                .bind(a.port)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("move a port allocation"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_port_allocation(
                &self,
                host: &str,
                project: &str,
                service: &str,
            ) -> $crate::store::Result<bool> {
                let done = sqlx::query("DELETE FROM port_allocations WHERE host = $1 AND project = $2 AND service = $3")
                    .bind(host)
                    .bind(project)
                    .bind(service)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("release a port"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_shared_port(&self, s: &$crate::store::SharedPort) -> $crate::store::Result<()> {
                sqlx::query("INSERT INTO shared_service_ports (host, name, port, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&s.host)
                    .bind(&s.name)
                    .bind(s.port)
                    .bind(chrono::Utc::now())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("register a shared service port"))?;
                Ok(())
            }

            async fn update_shared_port(&self, s: &$crate::store::SharedPort) -> $crate::store::Result<bool> {
                let done = sqlx::query("UPDATE shared_service_ports SET port = $3 WHERE host = $1 AND name = $2")
                    .bind(&s.host)
                    .bind(&s.name)
                    .bind(s.port)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("move a shared service port"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_shared_port(&self, host: &str, name: &str) -> $crate::store::Result<bool> {
                let done = sqlx::query("DELETE FROM shared_service_ports WHERE host = $1 AND name = $2")
                    .bind(host)
                    .bind(name)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("release a shared service port"))?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::InventoryRepo for $store {
            async fn list_managed(&self, provider: &str) -> $crate::store::Result<Vec<$crate::store::ManagedObject>> {
                sqlx::query_as(
                    "SELECT provider, address, external_id, attributes, adopted FROM managed_objects
                     WHERE provider = $1 ORDER BY address",
                )
                .bind(provider)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("read the managed-object inventory"))
            }

            async fn upsert_managed(&self, o: &$crate::store::ManagedObject) -> $crate::store::Result<()> {
                let now = chrono::Utc::now();
                sqlx::query(
                    "INSERT INTO managed_objects (provider, address, external_id, attributes, adopted, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)
                     ON CONFLICT (provider, address) DO UPDATE SET
                         external_id = excluded.external_id,
                         attributes = excluded.attributes,
                         adopted = excluded.adopted,
                         updated_at = excluded.updated_at",
                )
                .bind(&o.provider)
                .bind(&o.address)
                .bind(&o.external_id)
                .bind(&o.attributes)
                .bind(o.adopted)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("record a managed object"))?;
                Ok(())
            }

            async fn delete_managed(&self, provider: &str, address: &str) -> $crate::store::Result<bool> {
                let done = sqlx::query("DELETE FROM managed_objects WHERE provider = $1 AND address = $2")
                    .bind(provider)
                    .bind(address)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("forget a managed object"))?;
                Ok(done.rows_affected() > 0)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::JournalRepo for $store {
            async fn begin_run(&self, run: &$crate::store::ApplyRun) -> $crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO apply_runs (id, started_at, status, desired_revision, git_revision, actor, summary)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&run.id)
                .bind(run.started_at)
                .bind(&run.status)
                .bind(&run.desired_revision)
                .bind(&run.git_revision)
                .bind(&run.actor)
                .bind(&run.summary)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("record the start of an apply"))?;
                Ok(())
            }

            async fn finish_run(
                &self,
                id: &str,
                status: $crate::store::RunStatus,
                summary: &serde_json::Value,
            ) -> $crate::store::Result<()> {
                sqlx::query("UPDATE apply_runs SET status = $2, finished_at = $3, summary = $4 WHERE id = $1")
                    .bind(id)
                    .bind(status.as_str())
                    .bind(chrono::Utc::now())
                    .bind(sqlx::types::Json(summary))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("record the end of an apply"))?;
                Ok(())
            }

            async fn mark_interrupted_runs(&self) -> $crate::store::Result<u64> {
                let op = "mark interrupted applies";
                let mut tx = self.pool.begin().await.map_err($crate::store::StoreError::query(op))?;
                let now = chrono::Utc::now();
                sqlx::query(
                    "UPDATE apply_journal SET status = 'failed', error = 'interrupted (the process stopped mid-change)', finished_at = $1
                     WHERE status = 'started'",
                )
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err($crate::store::StoreError::query(op))?;
                let done = sqlx::query(
                    "UPDATE apply_runs SET status = 'interrupted', finished_at = $1 WHERE status = 'running'",
                )
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err($crate::store::StoreError::query(op))?;
                tx.commit().await.map_err($crate::store::StoreError::query(op))?;
                Ok(done.rows_affected())
            }

            async fn journal_start(
                &self,
                run_id: &str,
                seq: i32,
                address: &str,
                provider: &str,
                action: &str,
                intent: &serde_json::Value,
            ) -> $crate::store::Result<i64> {
                sqlx::query_scalar(
                    "INSERT INTO apply_journal (run_id, seq, address, provider, action, intent, status, started_at)
                     VALUES ($1, $2, $3, $4, $5, $6, 'started', $7) RETURNING id",
                )
                .bind(run_id)
                .bind(seq)
                .bind(address)
                .bind(provider)
                .bind(action)
                .bind(sqlx::types::Json(intent))
                .bind(chrono::Utc::now())
                .fetch_one(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("journal a change"))
            }

            async fn journal_finish(&self, id: i64, error: Option<&str>) -> $crate::store::Result<()> {
                let status = if error.is_some() { "failed" } else { "succeeded" };
                sqlx::query("UPDATE apply_journal SET status = $2, error = $3, finished_at = $4 WHERE id = $1")
                    .bind(id)
                    .bind(status)
                    .bind(error)
                    .bind(chrono::Utc::now())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("journal a change's outcome"))?;
                Ok(())
            }

            async fn latest_journal_entries(&self) -> $crate::store::Result<Vec<$crate::store::JournalEntry>> {
                sqlx::query_as(
                    "SELECT * FROM apply_journal WHERE id IN (SELECT max(id) FROM apply_journal GROUP BY address)
                     ORDER BY address",
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("read the apply journal"))
            }

            async fn last_run(&self) -> $crate::store::Result<Option<$crate::store::ApplyRun>> {
                sqlx::query_as("SELECT * FROM apply_runs ORDER BY started_at DESC, id DESC LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read the last apply"))
            }

            async fn recent_runs(&self, limit: i64) -> $crate::store::Result<Vec<$crate::store::ApplyRun>> {
                sqlx::query_as("SELECT * FROM apply_runs ORDER BY started_at DESC, id DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read the recent applies"))
            }

            async fn apply_run(&self, id: &str) -> $crate::store::Result<Option<$crate::store::ApplyRun>> {
                sqlx::query_as("SELECT * FROM apply_runs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("read an apply run"))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::TokenRepo for $store {
            async fn insert_token(&self, row: &$crate::store::TokenRow, hash: &str) -> $crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO mcp_tokens (id, token_hash, project, description, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&row.id)
                .bind(hash)
                .bind(&row.project)
                .bind(&row.description)
                .bind(row.created_at)
                .execute(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("store a token"))?;
                Ok(())
            }

            async fn token_by_hash(&self, hash: &str) -> $crate::store::Result<Option<$crate::store::TokenRow>> {
                sqlx::query_as(
                    "SELECT id, project, description, created_at, last_used_at, revoked_at FROM mcp_tokens
                     WHERE token_hash = $1 AND revoked_at IS NULL",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("look up a token"))
            }

            async fn list_tokens(&self) -> $crate::store::Result<Vec<$crate::store::TokenRow>> {
                sqlx::query_as(
                    "SELECT id, project, description, created_at, last_used_at, revoked_at FROM mcp_tokens ORDER BY created_at, id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err($crate::store::StoreError::query("list tokens"))
            }

            async fn revoke_token(&self, id: &str) -> $crate::store::Result<bool> {
                let done = sqlx::query("UPDATE mcp_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(chrono::Utc::now())
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("revoke a token"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_token(&self, id: &str, at: chrono::DateTime<chrono::Utc>) -> $crate::store::Result<()> {
                sqlx::query("UPDATE mcp_tokens SET last_used_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::query("record a token's use"))?;
                Ok(())
            }
        }
    };
}

pub(crate) use portable_repos;
